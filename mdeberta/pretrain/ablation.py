"""The embedding-sharing ablation: runs that differ only in their sharing (ES, NES, GDES),
compared in one table (ablation.md and .csv) with their pretraining curves in one picture (.png)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..storage import write_text_atomic
from .analyze import embedding_statistics
from .checkpoint import latest_checkpoint
from .plot import read_records, write_overlay


def write_ablation(runs: dict[str, tuple[Path, Path]], report: Path) -> None:
    """``report`` from each sharing's pretrain and xnli folders, the table beside it as CSV and
    the curves as PNG."""
    table = compare_sharing(runs)
    plot = report.with_suffix(".png")
    write_text_atomic(report.with_suffix(".csv"), table.to_csv(index=False, float_format="%.4f"))
    write_overlay({sharing: pretrain for sharing, (pretrain, _) in runs.items()}, plot)
    write_text_atomic(report,
        "# Embedding sharing compared\n\nPer run: the last validation in metrics.jsonl, the average cosine "
        "similarity of word-embedding pairs (DeBERTaV3's Table 1; `paper_*` are its base-size figures) and "
        "XNLI test accuracy (mean over seeds, averaged over languages).\n\n"
        + table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".4f", missingval="")
        + f"\n\n## Pretraining curves\n\nThe runs' metrics.jsonl over each other ({plot.name}; training "
        "solid, validation dashed):\n\n"
        f"![pretraining curves of {', '.join(runs)}]({plot.name})\n")


def compare_sharing(runs: dict[str, tuple[Path, Path]], pairs: int = 100_000) -> pd.DataFrame:
    """One row per embedding sharing from its pretrain and xnli folders; what a run lacks stays empty."""
    rows = []
    for sharing, (pretrain, xnli) in runs.items():
        row: dict = {"sharing": sharing}
        metrics = pretrain / "metrics.jsonl"
        validations = [r for r in read_records(metrics) if "valid_loss" in r] if metrics.is_file() else []
        if validations:
            last = validations[-1]
            row["step"] = last["step"]
            row.update({key.removeprefix("valid_"): last[key] for key in
                        ("valid_mlm_loss", "valid_mlm_accuracy", "valid_rtd_loss", "valid_rtd_accuracy",
                         "valid_rtd_auc")})
        checkpoint = latest_checkpoint(pretrain / "checkpoints")
        if checkpoint is not None:
            for stat in embedding_statistics(checkpoint, pairs).itertuples():
                row[f"cos_{stat.table}"] = stat.avg_cosine
                row[f"paper_{stat.table}"] = stat.paper_base
        if (xnli / "results.csv").is_file():
            results = pd.read_csv(xnli / "results.csv")
            for mean in results[results.row == "mean"].itertuples():
                row[f"xnli_{mean.setting}"] = mean.avg
        rows.append(row)
    table = pd.DataFrame(rows)
    order = [c for c in table.columns if not c.startswith(("cos_", "paper_", "xnli_"))]
    order += sorted(c for c in table.columns if c.startswith("cos_")) + \
        sorted(c for c in table.columns if c.startswith("paper_")) + [c for c in table.columns if c.startswith("xnli_")]
    return table[order]
