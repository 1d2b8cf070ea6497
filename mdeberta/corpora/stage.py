"""The corpus stage (``mdeberta corpus prepare``): raw text in, per-language shards out; the
phases that do the work are in prepare.py.

One run does it all, or the jobs of a cluster array share it: slices of the input shards
(``shard_index``), dedup tasks (``dedup_task``), then one ``merge_only`` run that finishes it.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Callable

from ..console import log
from ..locking import output_lock
from ..manifest import MANIFEST, is_complete
from ..stage import Stage
from .prepare import Preparation
from .settings import CorpusSettings


class CorpusStage(Stage):
    name = "corpus"

    def __init__(self, settings: CorpusSettings, out: str | Path, progress: bool = True,
                 echo: Callable[[str], None] = print):
        self.settings = settings
        self.folder = Path(out)
        self.reads = (*settings.inputs, settings.hf_dataset) if settings.hf_dataset else tuple(settings.inputs)
        self.progress = progress
        self.echo = echo  # where the closing summary goes

    @cached_property
    def preparation(self) -> Preparation:
        return Preparation(self.settings, self.folder, self.progress, self.echo)

    def complete(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def up_to_date(self) -> bool:
        return is_complete(self.folder, self.preparation.fingerprints, self.preparation.output_settings)

    def run(self, shard_index: int | None = None, num_shards: int = 1, merge_only: bool = False,
            force: bool = False, dedup_task: int | None = None) -> int:
        """Returns the exit status: 0 when every shard succeeded, 1 when some failed. The jobs of a
        cluster array share the output folder; any other run has it to itself."""
        preparation = self.preparation  # the inputs are found before the folder is taken
        one_job = shard_index is not None or dedup_task is not None  # one job of a cluster array
        with output_lock(self.folder, shared=one_job):
            if not force and not one_job and self.up_to_date():
                log(f"corpus: {self.folder} is up to date with these inputs and settings; nothing to do "
                    "(--force redoes it)")
                return 0
            return preparation.prepare(shard_index, num_shards, merge_only, force, dedup_task, one_job)
