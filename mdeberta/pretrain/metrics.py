"""What a pretraining run reports: RTD statistics, throughput, MFU, and where they are written."""

from __future__ import annotations

import json
import math
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


class MetricsLog:
    """Appends one JSON record per line to ``metrics.jsonl`` and sends it to the experiment trackers
    of ``report_to``; redraws ``curves.png`` beside it after each validation and when closed."""

    def __init__(self, path: Path, settings: PretrainSettings, resume_step: int = 0):
        self.path = path
        self._drop_after(resume_step)
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
        if any(key.startswith("valid_") for key in record):
            write_curves(self.path.parent)

    def close(self) -> None:
        try:
            if self.path.is_file() and self.path.stat().st_size:  # a run stopped before its first record has none
                write_curves(self.path.parent)
        finally:
            self.trackers.close()
