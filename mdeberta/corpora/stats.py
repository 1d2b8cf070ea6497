"""Counts of what the corpus stage kept and dropped, per language, step and reason.

Every paragraph that enters the cleaning rules leaves either kept or under exactly one drop
reason, so kept + dropped add up to what was read; the tests hold the stage to that.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from ..manifest import write_json_atomic
from ..storage import write_text_atomic

COUNTS = ("documents", "paragraphs", "characters")
UNKNOWN_LANGUAGE = "und"  # dropped before language identification


class Tally:
    def __init__(self):
        self.counts: dict[tuple[str, str, str], list[int]] = {}
        self.notes: Counter = Counter()  # what was changed rather than dropped (invalid bytes, ...)

    def add(self, lang: str, step: str, reason: str, documents: int = 0, paragraphs: int = 0, characters: int = 0):
        row = self.counts.setdefault((lang, step, reason), [0, 0, 0])
        row[0] += documents
        row[1] += paragraphs
        row[2] += characters

    def update(self, other: "Tally") -> "Tally":
        for key, values in other.counts.items():
            self.add(*key, *values)
        self.notes.update(other.notes)
        return self

    def to_json(self) -> dict:
        rows = [dict(zip(("lang", "step", "reason", *COUNTS), (*key, *values))) for key, values in sorted(self.counts.items())]
        return {"rows": rows, "notes": dict(self.notes)}

    @classmethod
    def from_json(cls, data: dict) -> "Tally":
        tally = cls()
        for row in data["rows"]:
            tally.add(row["lang"], row["step"], row["reason"], *(row[c] for c in COUNTS))
        tally.notes.update(data.get("notes", {}))
        return tally

    def frame(self) -> pd.DataFrame:
        rows = self.to_json()["rows"]
        return pd.DataFrame(rows, columns=["lang", "step", "reason", *COUNTS])


def language_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Kept and dropped per language, for the closing table and stats.json."""
    kept = frame[frame.reason == "kept"].groupby("lang")[list(COUNTS)].sum()
    dropped = frame[frame.reason != "kept"].groupby("lang")[list(COUNTS)].sum()
    table = kept.add_prefix("kept_").join(dropped.add_prefix("dropped_"), how="outer").fillna(0).astype("int64")
    table["kept_share"] = (table.kept_characters / (table.kept_characters + table.dropped_characters)).round(3)
    return table.sort_values("kept_characters", ascending=False)


def reason_summary(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby(["step", "reason"])[list(COUNTS)].sum().sort_values("characters", ascending=False)


def write_stats(out: Path, tally: Tally, failed: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = tally.frame()
    write_text_atomic(out / "stats.csv", frame.to_csv(index=False))
    languages, reasons = language_summary(frame), reason_summary(frame)
    report = {
        "languages": languages.reset_index().to_dict(orient="records"),
        "reasons": reasons.reset_index().to_dict(orient="records"),
        "rows": tally.to_json()["rows"],
        "notes": dict(tally.notes),
        "failed_shards": failed,
    }
    write_json_atomic(out / "stats.json", report)
    return languages, reasons
