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
