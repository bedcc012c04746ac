"""One dpo-scale command per output folder at a time.

An exclusive `fcntl.flock` on `<output_dir>/.dpo_scale.lock`: the operating system drops it when the holding
process ends, however it ends (kill -9 included), so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dpo_scale.errors import DpoScaleError

LOCK_NAME = ".dpo_scale.lock"


def is_launched_worker() -> bool:
    """True in a process started by a launcher (accelerate, torchrun) other than global rank 0: the rank-0
    process or the launcher's parent holds the folder for the whole job."""
    return int(os.environ.get("RANK", "0")) != 0


@contextmanager
def output_lock(output_dir: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold the folder's lock for the block; raise DpoScaleError at once if another process holds it."""
    folder = Path(output_dir)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise DpoScaleError(f"{folder}: already in use by {holder}; wait for it to finish or use another "
                                "output_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"`dpo-scale {command}` (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        except BaseException:
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # failed before writing anything
                path.unlink()
                folder.rmdir()
            raise
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
