"""What the later stages may rely on in a corpus folder: that the corpus stage finished it, where
each language's shards are, and each language's share of a multilingual draw."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..manifest import MANIFEST

WORK = "_work"  # the corpus stage's work folder, removed when the stage succeeds
SETTINGS = "settings.json"  # written when the corpus stage starts
TEXT_COLUMN = "text"  # paragraphs joined by newlines, in every <lang>/part-*.parquet


class UnfinishedCorpusError(UserError):
    pass


class CorpusError(UserError):
    """The corpus folder is missing, empty or not the corpus stage's output."""


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


def language_shards(corpus: Path, langs: list[str]) -> dict[str, list[Path]]:
    """``<corpus>/<lang>/part-*.parquet`` for the requested languages (all when none are given)."""
    if not corpus.is_dir():
        raise CorpusError(f"corpus not found: {corpus} (run `mdeberta corpus prepare ... --out {corpus}` first)")
    found = {d.name: sorted(d.glob("part-*.parquet")) for d in sorted(corpus.iterdir()) if d.is_dir()}
    found = {lang: parts for lang, parts in found.items() if parts}
    if not found:
        raise CorpusError(f"{corpus}: no <lang>/part-*.parquet shards; is it the output of `mdeberta corpus prepare`?")
    wanted = langs or sorted(found)
    missing = [lang for lang in wanted if lang not in found]
    if missing:
        raise CorpusError(f"{corpus}: no shards for language(s) {', '.join(missing)}; "
                          f"the corpus has {', '.join(sorted(found))}")
    return {lang: found[lang] for lang in wanted}


def language_shares(characters: dict[str, int], alpha: float) -> tuple[dict[str, float], dict[str, float]]:
    """p_i (share of the corpus) and q_i (share of the sample) per language."""
    total = sum(characters.values())
    p = {lang: n / total for lang, n in characters.items()}
    weights = {lang: share ** alpha for lang, share in p.items()}
    norm = sum(weights.values())
    return p, {lang: w / norm for lang, w in weights.items()}
