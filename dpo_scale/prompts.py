"""Read identity prompts: ShareGPT rows (`conversations` of `from`/`value`) whose last human turn
is the prompt. Also takes OpenAI-style `messages` (`role`/`content`) rows.

Sources: `builtin:NAME` (our data in dpo_scale/data), .json/.jsonl/.parquet files, a folder saved
with `datasets.save_to_disk`, or a hub data set name (needs network).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from dpo_scale.errors import DpoScaleError, where
from dpo_scale.io import read_jsonl

HUMAN = {"human", "user"}


@dataclass(frozen=True)
class Prompt:
    index: int  # position in the source (0-based), kept through sharding and filtering
    text: str


def builtin_path(name: str) -> Path:
    path = Path(str(resources.files("dpo_scale") / "data" / f"{name}.jsonl"))
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.jsonl"))
        raise DpoScaleError(f"dataset 'builtin:{name}' not found (builtin data sets: {', '.join(known)})")
    return path


def load_rows(source: str, split: str = "train") -> tuple[str, list[dict]]:
    """Rows of a data source as dicts, with a display name for error messages."""
    if source.startswith("builtin:"):
        path = builtin_path(source.split(":", 1)[1])
        return str(path), read_jsonl(path)
    path = Path(source)
    if path.is_file():
        if path.suffix == ".jsonl":
            return source, read_jsonl(path)
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DpoScaleError(f"{source}: malformed JSON ({e.msg} at line {e.lineno})") from None
            if isinstance(data, dict):  # {"train": [...]} or {"data": [...]}
                data = data.get(split) or data.get("data") or data
            if not isinstance(data, list):
                raise DpoScaleError(f"{source}: expected a JSON list of rows")
            for i, row in enumerate(data, start=1):
                if not isinstance(row, dict):
                    raise DpoScaleError(f"{where(source, i)}: expected a JSON object")
            return source, data
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return source, pq.read_table(path).to_pylist()
        raise DpoScaleError(f"{source}: unsupported file type '{path.suffix}' (use .json, .jsonl or .parquet)")
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise DpoScaleError(f"{source}: not a `datasets` folder ({e})") from None
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise DpoScaleError(f"{source}: no split '{split}' (has {', '.join(ds)})")
            ds = ds[split]
        return source, ds.to_list()
    if source.count("/") == 1 and not source.startswith((".", "/")) and path.suffix not in (".json", ".jsonl",
                                                                                              ".parquet"):
        from datasets import load_dataset

        try:
            return source, load_dataset(source, split=split).to_list()
        except Exception as e:  # network, auth, missing data set: all user-fixable
            raise DpoScaleError(f"dataset '{source}': could not load from the hub ({e})") from None
    raise DpoScaleError(f"dataset '{source}': file or folder not found")


def last_human_turn(row: dict[str, Any], name: str, row_number: int) -> str:
    if "conversations" in row:
        turns, speaker, text = row["conversations"], "from", "value"
        field = "conversations"
    elif "messages" in row:
        turns, speaker, text = row["messages"], "role", "content"
        field = "messages"
    else:
        raise DpoScaleError(f"{where(name, row_number, 'conversations')}: missing (row has {sorted(row)})")
    if not isinstance(turns, list):
        raise DpoScaleError(f"{where(name, row_number, field)}: expected a list of turns")
    for turn in reversed(turns):
        if isinstance(turn, dict) and turn.get(speaker) in HUMAN:
            value = turn.get(text)
            if not isinstance(value, str) or not value.strip():
                raise DpoScaleError(f"{where(name, row_number, field)}: the last human turn has an empty prompt")
            return value.strip()
    raise DpoScaleError(f"{where(name, row_number, field)}: no human turn")


def load_prompts(source: str, split: str = "train", limit: int | None = None) -> list[Prompt]:
    name, rows = load_rows(source, split)
    if not rows:
        raise DpoScaleError(f"{name}: no rows")
    if limit is not None:
        rows = rows[:limit]
    return [Prompt(i, last_human_turn(row, name, i + 1)) for i, row in enumerate(rows)]
