"""The pretraining loop: RTD with embedding sharing over packed multilingual sequences.

One optimizer step = the next global batch from ``PackedSequences`` (each rank takes its slice),
split into micro-batches whose gradients accumulate, clipped, AdamW. The randomness of a
micro-batch (masking, the generator's samples, dropout) is seeded from (seed, step, its first
sequence's place in the global batch), so a resumed run, and a run on another number of
processes with the same effective micro-batch size, draw the same masks for the same sequences.

A step can take minutes (8,192 sequences at the paper's defaults), so a stop is agreed between
micro-batches: the partial step is dropped (the generator's update undone, the data position and
the RNG states put back) and the last completed step saved, as if the run had stopped after it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from ..console import log
from ..distributed import World, restore_rng_states, rng_states
from ..errors import UserError
from ..optim import adamw
from ..model import RTDModel, cpu_isa, size_config
from ..plan import Pace, Plan, format_plan, model_size
from ..settings import SettingsError, output_settings
from .checkpoint import (STEP_DIR, Progress, latest_checkpoint, latest_intact_checkpoint, load_model,
                         load_training_state, remove_unfinished, save_checkpoint, saved_settings)
from .data import PackedSequences, TokenStreams, validation_batches
from .metrics import Interval, MetricsLog, peak_flops, roc_auc, training_flops_per_token
from .settings import PretrainSettings
from .tokens import TokenInventory

VOCAB_MULTIPLE = 128  # embedding rows rounded up to this for GPU-friendly matrix shapes
STOP_SIGNALS = {signal.SIGTERM: 143, signal.SIGINT: 130}
# Steps with a fraction for the micro-batches done within one
PROGRESS = "{l_bar}{bar}| {n:.2f}/{total_fmt} steps [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class NonFiniteLossError(UserError):
    pass


class ChangedSettingsError(SettingsError):
    """A checkpoint met with settings it was not trained with, listed in ``details``."""

    def __init__(self, checkpoint: Path, details: str):
        self.checkpoint, self.details = checkpoint, details
        super().__init__(f"{checkpoint} was trained with other settings ({details}); use them again to resume, or "
                         f"pass another --out (or delete {checkpoint.parent}) to start a new run")


TRAIN, VALID, DISCRIMINATOR = 0, 1, 2  # separate seed streams (the last: decoupled updates' second half)


def micro_batch_seed(seed: int, split: int, *position: int) -> int:
    return int(np.random.SeedSequence([seed, split, *position]).generate_state(1)[0])


def build_model(settings: PretrainSettings, inventory: TokenInventory) -> RTDModel:
    """The RTD model for this tokenizer: initial weights depend on the seed only."""
    vocab_size = settings.vocab_size or math.ceil(inventory.vocab_size / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    if vocab_size < inventory.vocab_size:
        raise SettingsError(f"vocab_size {vocab_size} is smaller than the tokenizer's {inventory.vocab_size} "
                            "ids ([MASK] included); set 0 to size it from the tokenizer")
    common = dict(vocab_size=vocab_size, pad_token_id=inventory.pad_id,
                  max_position_embeddings=max(512, settings.max_seq_length))
    discriminator = size_config(settings.size, **common)
    generator = size_config(settings.size, generator=True, **common)
    if settings.generator_layers:
        generator.num_hidden_layers = settings.generator_layers
    torch.manual_seed(settings.seed)
    return RTDModel(discriminator, generator, mask_token_id=inventory.mask_id, sharing=settings.sharing,
                    rtd_weight=settings.rtd_weight, mask_rate=settings.mask_rate, temperature=settings.temperature,
                    special_token_ids=(inventory.pad_id, inventory.cls_id, inventory.sep_id, inventory.unk_id),
                    unk_token_id=inventory.unk_id,
                    enhanced_mask_decoder=settings.enhanced_mask_decoder, attention=settings.attention,
                    real_vocab_size=inventory.vocab_size)


# Settings a run may change when it resumes: its length, how much is validated, and the arithmetic
# (a run moved from a GPU to a CPU continues in fp32). None of them is part of the weights so far.
RESUMABLE_CHANGES = ("max_steps", "eval_sequences", "precision")


def compile_layers(model: RTDModel) -> None:
    """Each encoder layer rather than each encoder whole: the generator's Enhanced Mask Decoder
    calls the embeddings, the encoder and its last layer itself, never a compiled ``deberta``."""
    options = cpu_isa.inductor_options(next(model.parameters()).device.type)
    for side in (model.generator, model.discriminator):
        for layer in side.deberta.encoder.layer:
            layer.compile(options=options)


# What a checkpoint written before a setting existed trained with.
SETTINGS_BEFORE_THEY_WERE_SAVED = {"update": "joint", "generator_learning_rate": 0.0}


def check_resumable(checkpoint: Path, settings: PretrainSettings) -> None:
    """A checkpoint continues only the run it came from."""
    saved = {**SETTINGS_BEFORE_THEY_WERE_SAVED, **saved_settings(checkpoint)}
    current = output_settings(settings)
    changed = [name for name, value in current.items()
               if name not in RESUMABLE_CHANGES and name in saved and saved[name] != value]
    if changed:
        details = ", ".join(f"{name}: {saved[name]} -> {current[name]}" for name in changed)
        raise ChangedSettingsError(checkpoint, details)


@dataclass
class _Update:
    """One optimizer step a training step makes: over the whole pair (joint), or over one model
    of it (decoupled), with its own clipping, AdamW state and schedule."""
    name: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


@dataclass
class _UpdateState:
    """An update's weights, AdamW state and schedule, copied before it steps (on the device:
    about three times its model's size), so that a step dropped afterwards can undo it. The
    tensors are cloned one by one: a deepcopy of the optimizer's state_dict costs as much again
    in Python on every step."""
    weights: list[torch.Tensor]
    moments: dict  # the optimizer's per-parameter state (step, exp_avg, exp_avg_sq), cloned
    groups: list[dict]  # its hyperparameters per group (the schedule sets their lr)
    scheduler: dict

    @classmethod
    @torch.no_grad()
    def of(cls, update: _Update) -> _UpdateState:
        optimizer = update.optimizer
        return cls([p.detach().clone() for p in update.module.parameters()],
                   {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                    for p, s in optimizer.state.items()},
                   [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups],
                   copy.deepcopy(update.scheduler.state_dict()))

    @torch.no_grad()
    def restore(self, update: _Update) -> None:
        for parameter, saved in zip(update.module.parameters(), self.weights):
            parameter.copy_(saved)
        update.optimizer.state.clear()
        update.optimizer.state.update(self.moments)
        for group, saved in zip(update.optimizer.param_groups, self.groups):
            group.update(saved)
        update.scheduler.load_state_dict(self.scheduler)


class _StepDropped(Exception):
    """Every process agreed to stop between two micro-batches of a step."""


class _StopVote:
    """Whether to stop at a micro-batch boundary, the same answer on every process. Under DDP a
    boundary's requests are all-reduced without waiting and read at the next boundary, so that the
    device never idles for a vote (the stop comes one micro-batch later); the step's last boundary
    waits for its own, as the end of a step waits for the device anyway."""

    def __init__(self, world: World):
        self.world = world
        self.left, self.pending = 0, None

    def begin(self, boundaries: int) -> None:
        self.left, self.pending = boundaries, None

    def stop(self, requested: bool) -> bool:
        self.left -= 1
        if not self.world.distributed:
            return requested
        agreed = self.pending is not None and self.pending()
        self.pending = None
        if agreed:
            return True
        if self.left == 0:
            return self.world.any(requested)
        self.pending = self.world.any_later(requested)
        return False


class Pretrainer:
    def __init__(self, settings: PretrainSettings, tokens_dir: Path, tokenizer: Path, out: Path, world: World,
                 progress: bool = True):
        self.settings, self.tokenizer, self.out, self.world = settings, Path(tokenizer), Path(out), world
        self.progress = progress and world.is_main
        self.inventory = TokenInventory.load(tokens_dir)
        langs = settings.langs or None
        self.data = PackedSequences(TokenStreams.open(tokens_dir, "train", langs), settings.max_seq_length,
                                    settings.alpha, settings.seed, self.inventory.cls_id, self.inventory.sep_id)
        valid = TokenStreams.open(tokens_dir, "valid", langs)
        self.valid_batches = validation_batches(valid, settings.max_seq_length, settings.micro_batch_size,
                                                settings.eval_sequences, self.inventory.cls_id,
                                                self.inventory.sep_id) if valid.langs else []
        self.per_rank = settings.batch_size // world.size
        self.micro = min(settings.micro_batch_size, self.per_rank)
        if settings.batch_size % world.size or self.per_rank % self.micro:
            raise SettingsError(f"batch_size ({settings.batch_size}) must be a multiple of micro_batch_size "
                                f"({self.micro}) x processes ({world.size})")
        if self.micro < settings.micro_batch_size and world.is_main:
            log(f"pretrain: micro-batches of {self.micro} sequences (batch_size / processes is below "
                 f"micro_batch_size {settings.micro_batch_size}); masks differ from a run with micro-batches of "
                 f"{settings.micro_batch_size}")
        self.model = build_model(settings, self.inventory).to(world.device)
        self.updates = self._updates()
        self.skipped_steps = 0  # non-finite steps skipped so far (on_nonfinite = "skip")
        self.stop_signal: int | None = None
        self.kept_steps = 0  # steps a stop requested now would save: those done, and one past its last micro-batch
        self.vote = _StopVote(world)
        self.bar = tqdm(disable=True)  # the loop's
        self.micro_batch_share = 1 / (self.per_rank // self.micro * len(self.updates))  # of a step's progress

    def plan(self, done: int = 0) -> Plan:
        """What the run will cost, before its first step."""
        settings = self.settings
        return Plan(models={name: model_size(getattr(self.model, name)) for name in ("generator", "discriminator")},
                    unit="sequences", batch=settings.batch_size, micro_batch=self.micro,
                    micro_batches=self.per_rank // self.micro, processes=self.world.size, steps=settings.max_steps,
                    total=settings.batch_size * settings.max_steps, out=self.out, done=done,
                    tokens_per_sequence=settings.max_seq_length)

    # ---------------------------------------------------------------- setup
    def _updates(self) -> list[_Update]:
        settings = self.settings
        if settings.decoupled:
            generator, discriminator = self.model.halves()
            parts = [("generator", generator, settings.generator_learning_rate or settings.learning_rate),
                     ("discriminator", discriminator, settings.learning_rate)]
        else:
            parts = [("model", self.model, settings.learning_rate)]
        updates = []
        for name, module, lr in parts:
            optimizer = adamw(module, lr, settings.weight_decay, self.world.device, settings.adam_betas,
                              settings.adam_eps)
            scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, settings.max_steps)
            updates.append(_Update(name, module, optimizer, scheduler))
        return updates

    def _restore(self) -> int:
        """The step to continue from; a finished run's weights are not even loaded."""
        root = self.out / "checkpoints"
        if self.world.is_main:
            remove_unfinished(root)
        checkpoint = latest_intact_checkpoint(root, log)
        if checkpoint is None:
            return 0
        step = int(STEP_DIR.match(checkpoint.name).group(1))
        check_resumable(checkpoint, self.settings)
        if step >= self.settings.max_steps:
            return step
        self.model.load_state_dict(load_model(checkpoint, self.settings.attention).state_dict())
        progress = load_training_state(checkpoint, self.updates)
        self.skipped_steps = progress.skipped_steps
        self.data.load_state_dict(progress.data_state)
        log(f"pretrain: resuming from {checkpoint} (step {progress.step})")
        return progress.step

    def _on_signal(self, signum, frame) -> None:
        """A second Ctrl-C stops at once. A repeated SIGTERM is the same request: under Slurm every
        process of a job step receives it, and torchrun then passes on its own."""
        if self.stop_signal is not None:
            if signum == signal.SIGINT:
                if self.world.is_main:
                    latest = latest_checkpoint(self.out / "checkpoints")
                    log(f"pretrain: a second Ctrl-C: stopping now, without saving (the latest checkpoint: "
                         f"{latest.name if latest else 'none'})")
                raise KeyboardInterrupt
            return
        self.stop_signal = signum
        if self.world.is_main:
            saving = f"saving step {self.kept_steps}" if self.kept_steps else "no step to save yet"
            log(f"pretrain: {signal.Signals(signum).name} received: stopping after this micro-batch; {saving}"
                 + (" (a second Ctrl-C stops at once, without saving)" if signum == signal.SIGINT else ""))

    # ---------------------------------------------------------------- the loop
    def train(self, resume: bool = False) -> int:
        """Trains to ``max_steps``; returns the exit status (0 done, 130/143 stopped by a signal)."""
        step = self._restore()
        if resume and step == 0:
            raise UserError(f"--resume: no checkpoint in {self.out / 'checkpoints'}; leave out --resume to start")
        if step >= self.settings.max_steps:
            log(f"pretrain: already trained to step {step} (max_steps {self.settings.max_steps})")
            return 0
        if self.world.is_main:
            log(format_plan(self.plan(step), "pretrain"))
        if self.settings.compile:
            compile_layers(self.model)
        # what runs each update's forward: under torchrun, a DDP wrapper per update, so that each
        # backward all-reduces its own model's gradients once
        runners = {update.name: self._distributed(update.module) for update in self.updates}
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        metrics_log = MetricsLog(self.out / "metrics.jsonl", self.settings, step) if self.world.is_main else None
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._loop(runners, step, metrics_log)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if metrics_log is not None:
                metrics_log.close()

    def _distributed(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.world.distributed:
            return module
        return DistributedDataParallel(module, device_ids=[self.world.device] if self.world.device.type == "cuda"
                                       else None)

    def _loop(self, runners: dict, step: int, metrics_log: MetricsLog | None) -> int:
        settings, world = self.settings, self.world
        interval = Interval(world.device)
        self.bar = tqdm(total=settings.max_steps, initial=step, unit="step", disable=not self.progress,
                        dynamic_ncols=True, smoothing=0, bar_format=PROGRESS)
        pace = Pace(step, settings.max_steps)
        flops = training_flops_per_token(self.model.discriminator.config, self.model.generator.config,
                                         settings.max_seq_length, settings.mask_rate)
        stop, saved, self.kept_steps = False, step, step
        while step < settings.max_steps:
            started, data_state, rng = time.perf_counter(), self.data.state_dict(), rng_states()
            batch = self.data.next_batch(settings.batch_size, world.rank, world.size)
            try:
                norms, rates = self._step(runners, step, batch, interval)
            except _StepDropped:
                self._drop_step(data_state, rng)
                if step != saved:
                    self._save(step)
                return self._stopped(step)
            step += 1
            if not all(torch.isfinite(norm) for norm in norms.values()):
                if settings.on_nonfinite == "stop":
                    raise self._nonfinite_error(step, norms)
                self.skipped_steps += 1
            self.bar.update(step - self.bar.n)  # the micro-batches' shares, made a whole step
            told = pace.step_done(time.perf_counter() - started)
            if told and world.is_main:
                log(f"pretrain: {told}")
            if self._due(step, settings.log_every):
                record = self._log_record(step, interval, norms, rates, flops)
                interval.reset()
                if metrics_log is not None:
                    metrics_log.write(record)
                    self.bar.set_postfix(loss=f"{record['loss']:.3f}", rtd_acc=f"{record['rtd_accuracy']:.3f}",
                                         tok_s=f"{record['tokens_per_s']:,.0f}")
                    log(_format_record(record))
            stop = world.any(self.stop_signal is not None)
            if not stop and self._due(step, settings.eval_every):
                with interval.paused():  # never in a preemption's grace period: that is the checkpoint's
                    self._validate(step, metrics_log)
            if stop or self._due(step, settings.checkpoint_every):
                with interval.paused():
                    self._save(step)
                saved = step
            # A signal past the last step's micro-batches still ends a finished run (exit 0, manifest
            # written): its checkpoint is the final one either way, and 143 would have a job script
            # requeue a run with nothing left to do. The final validation is all the signal costs.
            if stop and step < settings.max_steps:
                return self._stopped(step)
        self.bar.close()
        if stop and world.is_main:
            log("pretrain: stopped by a signal during the last step; the run is finished, without its final "
                 "validation")
        self._check_skipped()
        return 0

    def _drop_step(self, data_state: dict, rng: dict) -> None:
        """Back to the end of the last completed step: its gradients so far discarded, the data
        position and the RNG states it started from (the generator's update is undone in ``_step``)."""
        for update in self.updates:
            update.optimizer.zero_grad(set_to_none=True)
        self.data.load_state_dict(data_state)
        restore_rng_states(rng)

    def _stopped(self, step: int) -> int:
        """The exit status of a run stopped by a signal once ``step`` is saved."""
        self.bar.close()
        if self.world.is_main:
            log(f"pretrain: stopped at step {step}; checkpoint saved. Run the same command again to continue."
                 if step else "pretrain: stopped before the first step ended; nothing to save")
        return STOP_SIGNALS.get(self.stop_signal, 143)

    def _check_skipped(self) -> None:
        """A finished run that skipped steps says how many; past ``max_skipped_share`` it fails."""
        if not self.skipped_steps:
            return
        share = self.skipped_steps / self.settings.max_steps
        message = (f"{self.skipped_steps} of {self.settings.max_steps} steps ({share:.0%}) were skipped for a "
                   "non-finite loss or gradient")
        if share > self.settings.max_skipped_share:
            raise NonFiniteLossError(
                f"pretrain: {message}, more than max_skipped_share ({self.settings.max_skipped_share:.0%}): the "
                "run is diverging. Lower the learning rate or raise warmup_steps, and train again from a checkpoint "
                "before the skips began")
        if self.world.is_main:
            log(f"pretrain: warning: {message}")

    def _due(self, step: int, every: int) -> bool:
        """Every ``every`` steps (0: never) and at the last step."""
        return bool(every) and step % every == 0 or step == self.settings.max_steps

    def _step(self, runners: dict, step: int, batch: torch.Tensor, interval: Interval):
        """One training step over this rank's slice: joint, one update on L_MLM + lambda L_RTD;
        decoupled, the generator's update on L_MLM over every micro-batch, then the discriminator's
        on lambda L_RTD over the corrupted micro-batches the generator made before its update.
        Returns each update's gradient norm and learning rate."""
        ids = [micro.to(self.world.device, non_blocking=True) for micro in batch.split(self.micro)]
        norms, rates = {}, {}
        self.vote.begin(len(ids) * len(self.updates))
        if not self.settings.decoupled:
            outputs = self._backward(runners["model"], step, TRAIN, [(x, torch.ones_like(x)) for x in ids],
                                     lambda out: out.loss)
        else:
            corruptions = self._backward(runners["generator"], step, TRAIN, [(x, torch.ones_like(x)) for x in ids],
                                         lambda out: out.mlm_loss)
            before = _UpdateState.of(self.updates[0])
            norms["generator"], rates["generator"] = self._apply(self.updates[0])
            try:
                outputs = self._backward(runners["discriminator"], step, DISCRIMINATOR,
                                         [(corruption, torch.ones_like(x)) for corruption, x in zip(corruptions, ids)],
                                         lambda out: out.weighted_rtd_loss)
            except _StepDropped:
                before.restore(self.updates[0])
                raise
        last = self.updates[-1]
        norms[last.name], rates[last.name] = self._apply(last)
        for out in outputs:
            interval.add(out)
        interval.end_step(all(bool(torch.isfinite(norm)) for norm in norms.values()))
        return norms, rates

    def _backward(self, runner, step: int, stream: int, inputs: list[tuple], loss) -> list:
        """Forward and backward of each micro-batch, the gradient averaged over them; under DDP
        the last backward all-reduces. Each micro-batch's randomness is seeded by its position."""
        outputs = []
        for index, arguments in enumerate(inputs):
            first = self.world.rank * self.per_rank + index * self.micro
            torch.manual_seed(micro_batch_seed(self.settings.seed, stream, step, first))
            syncing = index == len(inputs) - 1 or not self.world.distributed
            with contextlib.nullcontext() if syncing else runner.no_sync():
                with self.world.autocast():
                    out = runner(*arguments)
                (loss(out) / len(inputs)).backward()
            outputs.append(out)
            self._after_micro_batch()
        return outputs

    def _after_micro_batch(self) -> None:
        """The progress bar moves; a stop requested ends the step here, unless this was its last
        micro-batch: then only the optimizer step is left, and the step is kept."""
        self.bar.update(self.micro_batch_share)
        if self.vote.stop(self.stop_signal is not None):
            raise _StepDropped
        if self.vote.left == 0:
            self.kept_steps += 1

    def _apply(self, update: _Update) -> tuple[torch.Tensor, float]:
        """Clips the update's gradient and steps its optimizer, unless the gradient is not finite;
        returns the gradient norm and the learning rate used."""
        clip = self.settings.grad_clip if self.settings.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(update.module.parameters(), clip)
        if torch.isfinite(norm):
            update.optimizer.step()
        update.optimizer.zero_grad(set_to_none=True)
        lr = update.scheduler.get_last_lr()[0]
        update.scheduler.step()
        return norm, lr

    def _nonfinite_error(self, step: int, norms: dict) -> NonFiniteLossError:
        latest = latest_checkpoint(self.out / "checkpoints")
        kept = f"the last checkpoint, {latest.name}, is intact" if latest else "no checkpoint was written yet"
        shown = ", ".join(f"{_norm_key(name).replace('_', ' ')} {norm.item()}" for name, norm in norms.items())
        return NonFiniteLossError(
            f"step {step}: the loss or gradient is not finite ({shown}); {kept}. Lower the "
            "learning rate or raise warmup_steps, or set on_nonfinite = 'skip' to skip such steps")

    # ---------------------------------------------------------------- reporting
    def _log_record(self, step, interval: Interval, norms: dict, rates: dict, flops: float) -> dict:
        tokens = interval.steps * self.settings.batch_size * self.settings.max_seq_length
        last = interval.last
        record = {"step": step, "lr": rates[self.updates[-1].name], **interval.summary(self.world),
                  "rtd_auc": roc_auc(last.rtd_logits, last.rtd_labels) if last is not None else math.nan,
                  **{_norm_key(name): float(norm) for name, norm in norms.items()},
                  "tokens_per_s": tokens / interval.training_seconds(), "skipped_steps": self.skipped_steps}
        if "generator" in rates:
            record["generator_lr"] = rates["generator"]
        peak = peak_flops(self.world.device)
        if peak is not None:
            record["mfu"] = flops * record["tokens_per_s"] / (peak * self.world.size)
        record["epochs"] = min(self.data.epochs.values())
        return record

    @torch.no_grad()
    def _validate(self, step: int, metrics_log: MetricsLog | None) -> None:
        """Held-out MLM and RTD metrics with fixed masks (seeded per batch), on rank 0."""
        if not self.world.is_main or not self.valid_batches:
            self.world.barrier()
            return
        self.model.eval()
        interval = Interval(self.world.device)
        logits, labels = [], []
        for index, batch in enumerate(self.valid_batches):
            torch.manual_seed(micro_batch_seed(self.settings.seed, VALID, index))
            ids = batch.to(self.world.device)
            with self.world.autocast():
                out = self.model(ids, torch.ones_like(ids))
            interval.add(out)
            logits.append(out.rtd_logits)
            labels.append(out.rtd_labels)
        self.model.train()
        interval.end_step()
        summary = interval.summary(World())
        record = {"step": step, **{f"valid_{key}": value for key, value in summary.items()},
                  "valid_rtd_auc": roc_auc(torch.cat(logits), torch.cat(labels))}
        metrics_log.write(record)
        log(_format_record(record))
        self.world.barrier()

    def _save(self, step: int) -> None:
        if self.world.is_main:
            save_checkpoint(self.out / "checkpoints",
                            Progress(step, self.data.state_dict(), self.skipped_steps, self.world.size),
                            model=self.model, updates=self.updates, settings=self.settings,
                            tokenizer=self.tokenizer, keep=self.settings.keep_checkpoints)
        self.world.wait_for_main()


def _norm_key(update: str) -> str:
    """metrics.jsonl's name of an update's gradient norm: grad_norm for the joint update."""
    return "grad_norm" if update == "model" else f"{update}_grad_norm"


def _format_record(record: dict) -> str:
    """One console line; metrics.jsonl keeps every field."""
    prefix = "valid_" if "valid_loss" in record else ""

    def value(key: str) -> float:
        return record[prefix + key]

    parts = [f"step {record['step']}", f"{prefix.rstrip('_') or 'train'}",
             f"loss {value('loss'):.3f}", f"mlm {value('mlm_loss'):.3f} acc {value('mlm_accuracy'):.3f}",
             f"rtd {value('rtd_loss'):.4f} acc {value('rtd_accuracy'):.3f} auc {value('rtd_auc'):.3f}",
             f"replaced {value('replaced_fraction'):.1%}"]
    if not prefix:
        grads = (f"grad {record['grad_norm']:.3g}" if "grad_norm" in record else
                 f"grad g {record['generator_grad_norm']:.3g} d {record['discriminator_grad_norm']:.3g}")
        parts += [f"lr {record['lr']:.2e}", grads, f"{record['tokens_per_s']:,.0f} tok/s"]
        parts += [f"mfu {record['mfu']:.1%}"] if "mfu" in record else []
    return " | ".join(parts)
