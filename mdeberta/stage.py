"""What every stage is to the pipeline: a folder it writes from what it reads, a status, a run.

Each package implements it in its ``stage.py`` (corpus, tokenizer, pretrain and export, xnli).
A stage decides its status itself, from its own manifest and the fingerprints of its inputs,
never from file times; the pipeline only asks, and runs what is not finished.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from .errors import UserError


class StageError(UserError):
    """A stage cannot run as asked (an input not made yet, work made otherwise); the message says
    what to do."""


class Status(enum.Enum):
    ABSENT = "absent"  # nothing done yet
    PARTIAL = "partial"  # begun, not complete: a run continues it
    STALE = "stale"  # complete, from other inputs or settings: a run redoes it
    FINISHED = "finished"  # complete, from these inputs and settings: nothing to do


class Stage(ABC):
    name: ClassVar[str]  # as --from, --until and --force name it
    folder: Path  # what it writes
    reads: tuple[Path | str, ...]  # the folders (or datasets) it is made from

    def status(self) -> Status:
        """Its manifest first: only a complete stage has inputs to compare."""
        if not self.complete():
            return Status.PARTIAL if self.begun() else Status.ABSENT
        return Status.FINISHED if self.up_to_date() else Status.STALE

    @abstractmethod
    def complete(self) -> bool:
        """Its manifest is there: its outputs are whole, whatever they were made from. Reads
        nothing else, so a later stage may rely on it even where this one's inputs are gone."""

    def begun(self) -> bool:
        """It holds work a run continues from."""
        return self.folder.is_dir() and any(self.folder.iterdir())

    @abstractmethod
    def up_to_date(self) -> bool:
        """A complete stage was made from these very inputs and settings."""

    @abstractmethod
    def run(self, *, force: bool = False) -> int:
        """Does what is left to do (everything with ``force``); returns the exit status."""
