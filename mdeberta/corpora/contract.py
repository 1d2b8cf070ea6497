"""What the later stages may rely on in a corpus folder: that the corpus stage finished it."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..manifest import MANIFEST

WORK = "_work"  # the corpus stage's work folder, removed when the stage succeeds
SETTINGS = "settings.json"  # written when the corpus stage starts


class UnfinishedCorpusError(UserError):
    pass


def require_finished_corpus(folder: str | Path) -> None:
    """A folder the corpus stage began and did not finish (a failed shard, a killed run) is
    refused in one line; one it never wrote to (a user's own per-language Parquet) is taken as is."""
    folder = Path(folder)
    began = (folder / SETTINGS).is_file() or (folder / WORK).is_dir()
    if (folder / MANIFEST).is_file() or not began:
        return
    try:
        failed = json.loads((folder / "stats.json").read_text(encoding="utf-8")).get("failed_shards") or {}
    except (OSError, ValueError):
        failed = {}
    why = f"{len(failed)} input shard(s) failed, e.g. {next(iter(failed))}" if failed else "its run did not finish"
    raise UnfinishedCorpusError(f"{folder} is an unfinished corpus ({why}; it has no {MANIFEST}): rerun "
                                f"`mdeberta corpus prepare` with the same inputs and --out {folder} to finish it")
