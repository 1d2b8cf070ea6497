"""What a pretraining run reports: RTD statistics, throughput, MFU, and where they are written."""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..storage import write_text_atomic, writing
from ..trackers import Trackers
from .plot import read_records, write_curves
from .settings import PretrainSettings

# Dense bf16 peak of one GPU, FLOP/s (vendor figures, without sparsity).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; nan when one class is
    absent. Ties among float logits are broken by order, which moves the result by at most the
    tied share."""
    labels = labels.bool()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64, device=scores.device)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _encoder_flops_per_token(config, seq_len: int) -> float:
    """Forward FLOPs of one token through the encoder: projections, FFN, content attention over
    ``seq_len`` keys, and the c2p/p2c products against the 2 x span relative table."""
    hidden, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    span = config.position_buckets if config.position_buckets > 0 else config.max_position_embeddings
    per_layer = 2 * 4 * hidden * hidden + 2 * 2 * hidden * ffn + 2 * 2 * seq_len * hidden + 2 * 2 * 2 * span * hidden
    return layers * per_layer


def training_flops_per_token(discriminator_config, generator_config, seq_len: int, mask_rate: float) -> float:
    """Forward + backward (3x forward) FLOPs per input token of one RTD step, LM head included
    (it runs at the masked positions only: mask_rate x (transform + vocabulary projection))."""
    hidden = generator_config.hidden_size
    lm_head = mask_rate * (2 * hidden * hidden + 2 * hidden * generator_config.vocab_size)
    rtd_head = 2 * hidden * hidden + 2 * hidden
    forward = (_encoder_flops_per_token(generator_config, seq_len) + lm_head
               + _encoder_flops_per_token(discriminator_config, seq_len) + rtd_head)
    return 3 * forward


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


class Interval:
    """Sums of the step statistics since the last log line, kept on the device (one all-reduce
    for all of them), and the training time they took."""

    # record key -> the attribute of the model's output it averages over micro-batches
    MEANS = {"loss": "loss", "mlm_loss": "mlm_loss", "rtd_loss": "rtd_loss",
             "mlm_accuracy": "generator_accuracy", "rtd_accuracy": "discriminator_accuracy"}
    COUNTS = ("masked", "replaced", "tokens")  # summed, for the fractions
    SUMMED = (*MEANS.values(), *COUNTS)

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.SUMMED), dtype=torch.float64, device=self.device)
        self.micro_batches = 0
        self.steps = 0
        self.pending: list = []  # this step's micro-batch outputs
        self.last = None  # the last kept micro-batch's output (for the AUC)
        self.started = time.perf_counter()
        self.paused_s = 0.0

    def add(self, out) -> None:
        self.pending.append(out)

    def end_step(self, finite: bool = True) -> None:
        """A skipped step's micro-batches stay out of the sums: one NaN would make every mean of the
        interval NaN."""
        if finite and self.pending:
            for out in self.pending:
                self.sums += torch.stack([getattr(out, name).detach().double() for name in self.SUMMED])
            self.micro_batches += len(self.pending)
            self.last = self.pending[-1]
        self.pending = []
        self.steps += 1

    @contextlib.contextmanager
    def paused(self):
        """Time spent here (validation, checkpoints) is not training and stays out of tokens/s. The
        steps still queued on the GPU are waited for first, so that their time stays in."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - started

    def training_seconds(self) -> float:
        return time.perf_counter() - self.started - self.paused_s

    def summary(self, world) -> dict:
        """Means over the kept micro-batches; NaN where every step of the interval was skipped."""
        sums = dict(zip(self.SUMMED, world.mean(self.sums).tolist()))
        means = {key: sums[name] / (self.micro_batches or math.nan) for key, name in self.MEANS.items()}
        means["masked_fraction"] = sums["masked"] / (sums["tokens"] or math.nan)
        means["replaced_fraction"] = sums["replaced"] / (sums["tokens"] or math.nan)
        means["replaced_of_masked"] = sums["replaced"] / (sums["masked"] or math.nan)
        return means


class MetricsLog:
    """Appends one JSON record per line to ``metrics.jsonl`` and sends it to the experiment trackers
    of ``report_to``; redraws ``curves.png`` beside it after each validation and when closed."""

    def __init__(self, path: Path, settings: PretrainSettings, resume_step: int = 0):
        self.path = path
        self._drop_after(resume_step)
        self.undrawn = False  # records written since curves.png was last drawn
        run = path.parent.resolve()
        self.trackers = Trackers(settings.report_to, run, run.name, asdict(settings), resume_step)

    def _drop_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint; their old records go, and so
        does a line cut short by the kill that interrupted the run."""
        if not self.path.is_file():
            return
        kept = [record for record in read_records(self.path) if record.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def write(self, record: dict) -> None:
        """Strict JSON: a value that is not finite (a skipped step's mean) is written as null."""
        strict = {key: None if isinstance(value, float) and not math.isfinite(value) else value
                  for key, value in record.items()}
        line = json.dumps(strict, allow_nan=False) + "\n"
        with writing(self.path, len(line)), self.path.open("a", encoding="utf-8") as f:
            f.write(line)
        self.trackers.log(record)
        self.undrawn = True
        if any(key.startswith("valid_") for key in record):
            self._draw()

    def _draw(self) -> None:
        write_curves(self.path.parent)
        self.undrawn = False

    def close(self) -> None:
        """The curves again, unless the last drawing already holds every record (a run that ends
        with a validation); a run stopped before its first record has none."""
        try:
            if self.undrawn:
                self._draw()
        finally:
            self.trackers.close()
