"""Generate the model's own answers (the rejected side of each pair) with vLLM or transformers."""
