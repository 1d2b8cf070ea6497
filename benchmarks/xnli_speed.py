"""XNLI fine-tuning and evaluation speed: `mdeberta xnli`'s loop against transformers' Trainer.

Both sides start from the same saved checkpoint (a randomly initialised deberta-v2 classifier of
``--size`` with a ``--vocab``-piece embedding, saved with save_pretrained), loaded the same way
(``from_pretrained`` of that folder: ours through ``mdeberta.model``, theirs through
transformers' ``DebertaV2ForSequenceClassification``), and see the same pairs.

Pairs are synthetic XNLI-like token ids: [CLS] premise [SEP] hypothesis [SEP] with log-normal
lengths (premise median 27 tokens, hypothesis median 12, as mDeBERTa's tokenizer cuts MNLI
English; p95 about 83 tokens per pair), capped at 256.

- ours, fine-tuning: ``mdeberta.xnli.train.fine_tune`` for one epoch over ``--train`` pairs
  (length-grouped batches, dynamic padding, AdamW + linear schedule, clipping); its one
  evaluation (on a single dev pair) and its checkpoint writes at the end are included.
- transformers, fine-tuning: ``Trainer.train`` with the same batch size, optimizer settings,
  schedule and clipping, no saving or logging; its default random batches with dynamic padding,
  and again with ``train_sampling_strategy="group_by_length"`` (its length-grouped sampler).
- evaluation: ``mdeberta.xnli.train.predict`` against ``Trainer.predict`` over ``--eval`` pairs,
  same batch size.

Both sides run where ``mdeberta.distributed.init_world`` puts ours: the GPU when there is one
(transformers' ``use_cpu`` follows it), else the CPU. ``--precision bf16`` turns on bf16 autocast on
both sides (``TrainingArguments(bf16=True)`` and ``init_world("bf16")``); fp32 is the default.

Each contender runs once on one batch's worth of pairs to warm up, then ``--rounds`` rounds run every contender in turn
(interleaved); medians of examples/s are reported with their ratios.

Usage: python benchmarks/xnli_speed.py [--size xsmall --vocab 8192 --train 128 --eval 256 --rounds 3 --threads 1
                                        --precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

LABELS = 3


def synthetic_pairs(count: int, vocab: int, seed: int):
    from mdeberta.xnli.batching import Encoded

    rng = random.Random(seed)
    ids, labels = [], []
    for _ in range(count):
        premise = min(200, max(3, round(rng.lognormvariate(3.3, 0.55))))
        hypothesis = min(60, max(2, round(rng.lognormvariate(2.5, 0.45))))
        body = [rng.randrange(4, vocab) for _ in range(premise + hypothesis)]
        ids.append(([1] + body[:premise] + [2] + body[premise:] + [2])[:256])
        labels.append(rng.randrange(LABELS))
    return Encoded.from_lists(ids, labels)


def subset(data, count: int | None):
    return data if count is None else data.head(count)


def checkpoint(size: str, vocab: int, folder: Path) -> Path:
    from mdeberta import model

    torch.manual_seed(0)
    model.build(size, head="classification", vocab_size=vocab, num_labels=LABELS).save_pretrained(folder)
    return folder


def _pairs_per_second(count: int, started: float) -> float:
    """GPU work is queued asynchronously: the clock stops only once it is done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def load(side: str, folder: Path):
    if side == "ours":
        from mdeberta.xnli.stage import load_classifier

        return load_classifier(str(folder))
    import transformers

    return transformers.DebertaV2ForSequenceClassification.from_pretrained(folder)


class _NoTokenizer:
    """What fine_tune needs of a tokenizer: the pad id and a save_pretrained for ``best/``."""
    pad_token_id = 0

    def save_pretrained(self, folder):
        pass


def settings_for(batch: int):
    from mdeberta.xnli.settings import XnliSettings

    return XnliSettings(batch_size=batch, epochs=1, warmup=0.1, eval_every=10**9, eval_batch_size=batch)


def ours_train(folder: Path, data, batch: int, runtime) -> float:
    from mdeberta.xnli.train import fine_tune

    model = load("ours", folder)
    dev = {"en": data.head(1)}
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        fine_tune(model, _NoTokenizer(), data, dev, settings_for(batch), seed=1, workdir=Path(work),
                  runtime=runtime, identity={}, progress=False)
        return _pairs_per_second(len(data), started)


def _hf_features(data):
    return [{"input_ids": data.row(i).tolist(), "labels": int(data.labels[i])} for i in range(len(data))]


def _hf_collate(features):
    from mdeberta.xnli.batching import Encoded, collate

    data = Encoded.from_lists([f["input_ids"] for f in features], [f["labels"] for f in features])
    return collate(data, list(range(len(features))), pad_id=0, device="cpu")


def hf_trainer(folder: Path, batch: int, group_by_length: bool, output_dir: str, runtime):
    """Trainer on ``runtime``'s device and precision, so both sides do the same arithmetic."""
    import transformers

    args = transformers.TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
        num_train_epochs=1, learning_rate=2e-5, warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0,
        lr_scheduler_type="linear", save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to=[], use_cpu=runtime.device.type == "cpu", bf16=runtime.precision == "bf16",
        disable_tqdm=True, seed=1,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        dataloader_num_workers=0)
    return transformers.Trainer(model=load("transformers", folder), args=args, data_collator=_hf_collate)


def hf_train(folder: Path, data, batch: int, group_by_length: bool, runtime) -> float:
    with tempfile.TemporaryDirectory() as out:
        trainer = hf_trainer(folder, batch, group_by_length, out, runtime)
        trainer.train_dataset = _hf_features(data)
        started = time.perf_counter()
        trainer.train()
        return _pairs_per_second(len(data), started)


def ours_eval(folder: Path, data, batch: int, runtime) -> float:
    from mdeberta.xnli.train import predict

    model = load("ours", folder).to(runtime.device)
    started = time.perf_counter()
    predict(model, data, batch, runtime, pad_id=0)
    return _pairs_per_second(len(data), started)


def hf_eval(folder: Path, data, batch: int, runtime) -> float:
    with tempfile.TemporaryDirectory() as out:
        trainer = hf_trainer(folder, batch, False, out, runtime)
        features = _hf_features(data)  # outside the timing, as ours is timed on encoded pairs
        started = time.perf_counter()
        trainer.predict(features)
        return _pairs_per_second(len(data), started)


def machine() -> dict:
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="xsmall")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--train", type=int, default=128, help="training pairs per run (one epoch)")
    parser.add_argument("--eval", type=int, default=256, help="evaluation pairs per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); 1 on a machine "
                        "whose cores other jobs share, where two threads mostly wait on each other")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: autocast on both sides (TrainingArguments(bf16=True), init_world('bf16'))")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mdeberta.distributed import init_world

    runtime = init_world(args.precision)

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    train = synthetic_pairs(args.train, args.vocab, seed=1)
    evaluation = synthetic_pairs(args.eval, args.vocab, seed=2)
    contenders = {
        ("fine-tuning", "ours"): lambda f, n: ours_train(f, subset(train, n), args.batch, runtime),
        ("fine-tuning", "transformers Trainer"):
            lambda f, n: hf_train(f, subset(train, n), args.batch, False, runtime),
        ("fine-tuning", "transformers Trainer, group_by_length"):
            lambda f, n: hf_train(f, subset(train, n), args.batch, True, runtime),
        ("evaluation", "ours"): lambda f, n: ours_eval(f, subset(evaluation, n), args.eval_batch, runtime),
        ("evaluation", "transformers Trainer"):
            lambda f, n: hf_eval(f, subset(evaluation, n), args.eval_batch, runtime),
    }
    lengths = sorted(train.lengths())
    print(f"pairs: median {lengths[len(lengths) // 2]} tokens, p95 {lengths[int(0.95 * len(lengths))]}, "
          f"max {lengths[-1]}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        folder = checkpoint(args.size, args.vocab, Path(tmp) / "model")
        for name, run in contenders.items():  # warm-up: one batch's worth
            print(f"warm-up {name}: {run(folder, args.batch):.1f} pairs/s", file=sys.stderr)
        samples: dict = {name: [] for name in contenders}
        for round_ in range(args.rounds):
            for name, run in contenders.items():
                samples[name].append(run(folder, None))
                print(f"round {round_ + 1} {name}: {samples[name][-1]:.2f} pairs/s", file=sys.stderr)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    rows = []
    for (task, side), value in medians.items():
        rows.append({"task": task, "contender": side, "pairs/s (median)": round(value, 2),
                     "rounds": ", ".join(f"{v:.1f}" for v in samples[task, side]),
                     "ours vs this": round(medians[task, "ours"] / value, 2)})
    result = {"machine": machine(), "setup": vars(args) | {"device": str(runtime.device),
                                                          "train_tokens_median": lengths[len(lengths) // 2]},
              "rows": rows}
    import pandas as pd

    print(json.dumps(result["machine"] | {"device": str(runtime.device), "precision": runtime.precision}))
    print(pd.DataFrame(rows).to_markdown(index=False))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
