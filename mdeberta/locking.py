"""One run per output folder: an OS file lock (``flock``) on the folder itself. The kernel
releases it when its process ends, however it ends, so a killed run never leaves a stale lock.
While it is held, ``DIR/.lock`` names the holding process (for the refusal's message)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import UserError
from .storage import writing

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not guarded
    fcntl = None

LOCK = ".lock"


class FolderInUseError(UserError):
    pass


def output_lock(folder: str | Path, shared: bool = False):
    """``folder_lock`` in the first process of a run; under torchrun the run's other processes
    (RANK > 0) write where the first tells them, so they take no lock of their own."""
    return folder_lock(folder, shared) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()


@contextlib.contextmanager
def folder_lock(folder: str | Path, shared: bool = False):
    """Holds ``folder`` for this process: exclusively, or ``shared`` with the other jobs of one
    cluster array (which write apart from each other) but with no exclusive run. A run that
    finds the folder held refuses at once, naming the process holding it."""
    folder = Path(folder)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    note = folder / LOCK
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = note.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise FolderInUseError(f"{folder} is in use by another mdeberta run (process {holder}); wait for it "
                                   "to end or choose another output folder") from None
        with writing(note):
            note.write_text(str(os.getpid()))
        try:
            yield
        finally:
            if not shared:  # the jobs of an array end in any order: theirs is left to the next run
                note.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
