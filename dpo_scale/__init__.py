"""dpo_scale: change what a chat model says about itself with DPO, at cluster scale."""

__version__ = "0.1.0"
