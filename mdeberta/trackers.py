"""Experiment trackers that a training stage's records also go to (``report_to``): TensorBoard and
Weights & Biases.

Both are optional packages, imported only when a run reports to them. Without ``report_to`` a
run reports to TensorBoard when it is installed, and to nothing otherwise; ``none`` turns every
tracker off.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import UserError
from .settings import SettingsError

TRACKERS = ("tensorboard", "wandb")
NONE = "none"
REPORT_TO_HELP = (f"experiment trackers the metrics also go to: {', '.join(TRACKERS)}, or {NONE} (default: "
                  "tensorboard when installed); wandb's run is named after the output folder and its config is "
                  "these settings (WANDB_PROJECT, WANDB_MODE=offline and WANDB_DIR are honoured)")


def _installed(tracker: str) -> bool:
    return importlib.util.find_spec(tracker) is not None


def check_report_to(names: list[str]) -> None:
    """Known names, and the packages of those asked for installed: a missing one is said before
    a run starts, not after hours of tokenizing."""
    unknown = [name for name in names if name not in (*TRACKERS, NONE)]
    if unknown:
        raise SettingsError(f"report_to: {', '.join(unknown)} is not one of {', '.join(TRACKERS)}, {NONE}")
    if NONE in names and len(names) > 1:
        raise SettingsError(f"report_to: {NONE} turns every tracker off; give it alone")
    missing = [name for name in names if name in TRACKERS and not _installed(name)]
    if missing:
        raise SettingsError(f"report_to {missing[0]}: the {missing[0]} package is not installed; "
                            f"pip install {missing[0]} (or leave {missing[0]} out of report_to)")


def chosen_trackers(names: list[str]) -> list[str]:
    if not names:
        return ["tensorboard"] if _installed("tensorboard") else []
    return [name for name in names if name != NONE]


class Trackers:
    """Sends records (a dict of numbers with its ``step``) to the chosen trackers. ``folder`` holds
    TensorBoard's events (``folder/tensorboard``) and, unless WANDB_DIR says otherwise, W&B's
    files. A run resumed after ``resume_step`` drops TensorBoard's later events, which it repeats."""

    def __init__(self, report_to: list[str], folder: Path, name: str, config: dict, resume_step: int | None = None,
                 group: str | None = None):
        trackers = chosen_trackers(report_to)
        self.tensorboard = self.wandb = None
        if "tensorboard" in trackers:
            from torch.utils.tensorboard import SummaryWriter

            purge_step = None if resume_step is None else resume_step + 1
            self.tensorboard = SummaryWriter(str(folder / "tensorboard"), purge_step=purge_step)
        if "wandb" in trackers:
            import wandb

            folder.mkdir(parents=True, exist_ok=True)
            try:
                self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "mdeberta"), name=name, group=group,
                                        config=config, dir=os.environ.get("WANDB_DIR", str(folder)))
            except wandb.errors.Error as err:  # not logged in, no connection
                raise UserError(f"report_to wandb: {str(err).rstrip('.')}; or set WANDB_MODE=offline to keep the "
                                "run on disk (`wandb sync` uploads it later)") from None

    def log(self, record: dict) -> None:
        step = record["step"]
        scalars = {key: value for key, value in record.items()
                   if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
