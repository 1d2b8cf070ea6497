"""Acceptance: document-level language-ID accuracy of `mdeberta corpus prepare` on real text.

Runs the corpus stage at its default settings on each UDHR file of ../shared/data/udhr (31
articles per language, 15 XNLI languages) and prints, per language:

- accuracy: documents whose identified language is the file's language, over the documents that
  reached language ID (top-1 label, as CCNet and REFERENCE.md measure it);
- kept: documents written to the right language folder (score >= --lid-threshold);
- precision: of the documents written anywhere, those in the right folder.

Usage: python benchmarks/udhr_langid.py [UDHR_DIR]   (exits 1 below 99% accuracy)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

from mdeberta.corpora.settings import CorpusSettings
from mdeberta.corpora.stage import CorpusStage

DEFAULT_UDHR = Path(__file__).resolve().parents[2] / "shared" / "data" / "udhr"


def language_accuracy(udhr: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(udhr.glob("??.txt")):
        lang = path.stem
        with tempfile.TemporaryDirectory() as out:
            CorpusStage(CorpusSettings(inputs=[str(path)], workers=1), out, progress=False, echo=lambda _: None).run()
            stats = pd.read_csv(Path(out) / "stats.csv")
        identified = stats[stats.step.isin(["langid", "dedup", "output"]) & (stats.reason != "duplicate_paragraph")]
        reached = identified.documents.sum()
        correct = identified[identified.lang == lang].documents.sum()
        kept = stats[stats.reason == "kept"]
        rows.append({"lang": lang, "documents": stats.documents.sum(), "reached_lid": reached, "correct": correct,
                     "kept_right": kept[kept.lang == lang].documents.sum(), "kept_all": kept.documents.sum(),
                     "confused_with": ", ".join(sorted(set(identified[identified.lang != lang].lang)))})
    table = pd.DataFrame(rows).set_index("lang")
    table.loc["all"] = table.sum(numeric_only=True).tolist() + [""]
    table["accuracy"] = table.correct / table.reached_lid
    table["kept"] = table.kept_right / table.reached_lid
    table["precision"] = table.kept_right / table.kept_all
    return table[["documents", "reached_lid", "accuracy", "kept", "precision", "confused_with"]]


def main() -> int:
    udhr = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_UDHR
    if not udhr.is_dir():
        print(f"UDHR data not found at {udhr}; pass its folder as the first argument", file=sys.stderr)
        return 2
    table = language_accuracy(udhr)
    print(table.to_markdown(floatfmt=".3f"))
    return 0 if table.loc["all", "accuracy"] >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
