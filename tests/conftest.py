import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at test time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from dpo_scale.testing import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory) -> str:
    from dpo_scale.testing import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_nt") / "model", chat_template=None))


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real embedded model, converted once into the cache (DPO_SCALE_CACHE)."""
    from dpo_scale.models import resolve_model

    return resolve_model("smollm2")
