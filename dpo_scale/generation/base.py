"""What every generation backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int  # generated tokens, end-of-sequence included, padding excluded
    finished: bool = True  # False: cut off by max_new_tokens before the model ended its answer


class Generator(Protocol):
    name: str

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        """Complete each tokenized prompt; results in input order."""
        ...

    def close(self) -> None:
        """Release what the backend holds beyond Python objects (engine processes)."""
        ...


def detokenize(tokenizer, prompt_ids: list[int], ids: list[int]) -> str:
    """The text vLLM 0.32 itself would return for `ids` (skip_special_tokens, no stop strings): its
    FastIncrementalDetokenizer's steps, a tokenizers DecodeStream primed with the prompt. A character whose bytes
    are still incomplete at the end is left out, where a plain decode writes U+FFFD (the data differed on one row of
    1512 before this). Both backends' texts read this way (the hf backend where a plain decode ends in U+FFFD).
    Slow tokenizers: a plain decode."""
    import tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer.decode(ids, skip_special_tokens=True)
    stream, parts = tokenizers.decoders.DecodeStream(ids=prompt_ids, skip_special_tokens=True), []
    for token in ids:
        try:
            parts.append(stream.step(backend, token) or "")
        except Exception as e:
            if not str(e).startswith("Invalid prefix encountered"):
                raise
            # as vLLM: tokenizers' stream breaks on non-monotonic UTF-8 output; restart it (vllm-project/vllm#17448)
            stream = tokenizers.decoders.DecodeStream(skip_special_tokens=True)
            parts.append(stream.step(backend, token) or "")
    return "".join(parts)
