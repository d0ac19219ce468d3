"""One process trains a run folder at a time.

Two processes training the same folder (a `--resume` while the run is still going, say) would
race on one checkpoint and one metrics file, and the last writer would win. A run holds an
exclusive lock on the hidden file `.lock` in its folder while it trains; the operating system
releases it when the process ends, however it ends, so a crashed run never leaves a stale lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import CheckpointError

LOCK_NAME = ".lock"


class RunInUseError(CheckpointError):
    """Another process is training the run folder."""


@contextmanager
def hold_run(out: Path) -> Iterator[None]:
    """Hold `out`'s lock for the duration of the block, or raise `RunInUseError` naming the
    process that holds it. Creates `out` when it does not exist."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held open while the run trains
    try:
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInUseError(
                f"{out} is being trained by {holder}; wait for it to finish, or stop it "
                f"(Ctrl-C saves its checkpoint) and then run --resume {out}"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock


def _try_lock(handle) -> bool:  # noqa: ANN001 - an open text file
    """Take the exclusive lock on `handle` without waiting; False when another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
