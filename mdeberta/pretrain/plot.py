"""Pictures of pretraining curves, drawn from metrics.jsonl: one run's (``curves.png``, redrawn as
it trains) or several runs over each other (``mdeberta pretrain plot``, the ablation's chart).

One panel per quantity; a run's training records (interval means every ``log_every`` steps) are
solid lines, its validations dashed with a marker at each. Drawn on a bare matplotlib Figure (the
Agg renderer, no pyplot): nothing global, no window, safe beside training. Reading the records
needs neither matplotlib nor torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import UserError
from ..storage import write_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS = "metrics.jsonl"
CURVES = "curves.png"


class PlotError(UserError):
    pass


@dataclass(frozen=True)
class Panel:
    title: str
    key: str  # the training record's key; validation records hold valid_<key> where it is measured


PANELS = (
    Panel("generator MLM loss", "mlm_loss"),
    Panel("generator MLM accuracy", "mlm_accuracy"),
    Panel("RTD loss", "rtd_loss"),
    Panel("RTD accuracy", "rtd_accuracy"),
    Panel("RTD AUC", "rtd_auc"),
    Panel("loss (L_MLM + λ L_RTD)", "loss"),
    Panel("learning rate", "lr"),
    Panel("tokens/s (training time)", "tokens_per_s"),
)
COLUMNS = 4


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short (by a kill, or being written now) is left out."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def read_metrics(run: Path) -> pd.DataFrame:
    """A run's records, one row each; a missing value (null, or a key a record lacks) is NaN."""
    path = Path(run) / METRICS
    if not path.is_file():
        raise PlotError(f"{run}: no {METRICS}; give the --out folder of `mdeberta pretrain run`")
    records = read_records(path)
    if not records:
        raise PlotError(f"{path}: no records yet; the first is written after log_every steps")
    return pd.DataFrame(records).apply(pd.to_numeric, errors="coerce")


def run_label(run: Path) -> str:
    """The folder's name, with the embedding sharing its settings.json records when the name
    does not say it already."""
    run = Path(run)
    name = run.resolve().name
    try:
        sharing = json.loads((run / "settings.json").read_text(encoding="utf-8")).get("sharing")
    except (OSError, ValueError):
        sharing = None
    return f"{name} ({sharing})" if sharing and sharing not in name else name


def draw(runs: dict[str, pd.DataFrame], title: str) -> Figure:
    """One panel per entry of PANELS, every run in each; the legend names run and split."""
    from matplotlib.figure import Figure  # loaded by the process that draws, only when it draws

    rows = -(-len(PANELS) // COLUMNS)
    fig = Figure(figsize=(4 * COLUMNS + 2.5, 3.3 * rows + 0.6))
    # fixed margins, the legend in the right one: a layout engine would double the drawing time
    fig.subplots_adjust(left=0.05, right=0.85, bottom=0.08, top=0.88, wspace=0.3, hspace=0.4)
    axes = fig.subplots(rows, COLUMNS, squeeze=False).ravel()
    single = len(runs) == 1  # its legend says only train and validation
    for ax, panel in zip(axes, PANELS):
        for index, (label, metrics) in enumerate(runs.items()):
            _draw_run(ax, panel, metrics, "" if single else label, index, single)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(PANELS):]:
        ax.set_visible(False)
    legend = {}
    for ax in axes[:len(PANELS)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="upper left", bbox_to_anchor=(0.86, 0.88), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def _draw_run(ax, panel: Panel, metrics: pd.DataFrame, label: str, index: int, single: bool) -> None:
    color = f"C{index}"
    for key, split, style in ((panel.key, "train", dict(linewidth=1.2)),
                              (f"valid_{panel.key}", "validation", dict(linestyle="--", marker="o", markersize=3))):
        if key not in metrics:
            continue
        points = metrics[["step", key]].dropna()
        if points.empty:
            continue
        # one run: the splits in two colours; several: a colour per run, the split by line style
        shade = "C1" if single and split == "validation" else color
        ax.plot(points.step, points[key], color=shade, label=f"{label} {split}".strip(), **style)


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_figure(fig, path, dpi=110)
    return path


def write_curves(run: Path) -> Path:
    """``run/curves.png`` from ``run/metrics.jsonl``."""
    metrics = read_metrics(run)
    title = f"pretraining {Path(run).resolve().name}: step {int(metrics.step.max())}"
    return save(draw({run_label(run): metrics}, title), Path(run) / CURVES)


def write_overlay(runs: dict[str, Path], out: Path) -> Path:
    """The runs ``{label: folder}`` over each other in one picture; every folder is checked first."""
    metrics = {label: read_metrics(folder) for label, folder in runs.items()}
    return save(draw(metrics, f"pretraining: {', '.join(runs)}"), out)


def labelled(runs: list[Path]) -> dict[str, Path]:
    """Runs by their labels; where two labels coincide, every run is named by its path as given."""
    labels = [run_label(run) for run in runs]
    if len(set(labels)) < len(labels):
        labels = [str(run) for run in runs]
    return dict(zip(labels, runs))
