"""The tokenizer folder's README.md: what it was trained on, how well it fits, how to load it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from ..storage import write_text_atomic

NORMALIZATION_NOTES = {
    "controls": "Tabs and line breaks become spaces, other control characters are removed, runs of "
                "spaces become one; no Unicode folding (the corpus stage wrote NFC text).",
    "nmt_nfkc": "SentencePiece's NFKC with its NMT rules. transformers applies this map per grapheme "
                "cluster and can drop a combining mark that follows a compatibility character, so its "
                "ids may differ from SentencePiece's on such text.",
}


def sample_table(sample_stats: dict) -> str:
    rows = [{"lang": lang, "corpus lines": s["lines_available"], "p": round(s["p"], 4), "q": round(s["q"], 4),
             "lines in sample": s["quota"], "distinct": s["lines_drawn"], "repeated": s["lines_repeated"]}
            for lang, s in sample_stats["languages"].items()]
    return pd.DataFrame(rows).to_markdown(index=False)


def write_model_card(out: Path, *, corpus: Path, settings, sample_stats: dict, pieces: int, mask_id: int,
                     fit_markdown: str) -> None:
    template = resources.files(__package__).joinpath("model_card.md").read_text(encoding="utf-8")
    languages = list(sample_stats["languages"])
    text = template.format(
        language_list=", ".join(languages), pieces=pieces, requested=settings.vocab_size, mask_id=mask_id,
        sample_lines=sample_stats["lines"], sample_characters=sample_stats["characters"], corpus=corpus,
        sampled=sample_stats["sampled"],
        normalization=settings.normalization, normalization_note=NORMALIZATION_NOTES[settings.normalization],
        character_coverage=settings.character_coverage, max_sentence_length=settings.max_sentence_length,
        long_lines_split=sum(s["long_lines_split"] for s in sample_stats["languages"].values()),
        alpha=settings.alpha, sample_table=sample_table(sample_stats), report_lines=settings.report_lines,
        fit_table=fit_markdown, out=out)
    write_text_atomic(out / "README.md", text)
