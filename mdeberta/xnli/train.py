"""Fine-tuning: one readable loop with periodic evaluation, best-checkpoint selection and resume.

The loop keeps two things on disk in its work folder: ``best/`` (the weights of the best
evaluation so far, as a transformers folder) and ``state.pt`` (model, optimizer, scheduler, step
and the evaluations with the best step, written at every evaluation). A rerun finds ``state.pt``
and continues from that step; batches are a function of (seed, epoch) and dropout of (seed, step,
process), so it sees the batches and masks the killed run would have seen. ``best/`` always holds
the step ``state.pt`` records as the best: a new best is written beside it and moved in only
after the state recording it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..errors import UserError
from ..optim import adamw
from ..storage import tensor_bytes, writing
from .batching import Encoded, collate, length_grouped_batches, shard, sorted_batches
from ..distributed import World
from ..plan import Pace, Plan, format_plan, model_size
from ..trackers import Trackers
from .settings import XnliSettings

STATE = "state.pt"
BEST = "best"


class ResumeMismatchError(UserError):
    pass


@dataclass
class Selection:
    """The evaluations so far and the best of them (by the selection score)."""
    history: list[dict] = field(default_factory=list)
    best_step: int = -1
    best_score: float = -1.0


def evaluation_bar(sets, description: str, runtime: World, progress: bool) -> tqdm:
    """One bar over an evaluation pass (all the sets it predicts), in pairs of every process;
    shown by process 0, and removed when the pass ends."""
    return tqdm(total=sum(len(data) for data in sets), desc=description, unit=" pairs", leave=False,
                disable=not (progress and runtime.is_main), dynamic_ncols=True)


def predict(model, data: Encoded, batch_size: int, runtime: World, pad_id: int, bar: tqdm | None = None) -> list[int]:
    """Predicted label ids in the order of ``data``; the set is length-sorted, so a batch pads
    only to its own longest pair, and split between the processes: one batch each per round."""
    model.eval()
    batches = sorted_batches(data.lengths(), batch_size)
    found: list[tuple[int, int]] = []
    # no_grad rather than inference_mode: the encoder caches position indices per length, and an
    # inference tensor in that cache would break the next training step at that length.
    with torch.no_grad(), runtime.autocast():
        for start in range(0, len(batches), runtime.size):
            round_batches = batches[start:start + runtime.size]
            if runtime.rank < len(round_batches):
                indices = round_batches[runtime.rank]
                batch = collate(data, indices, pad_id, runtime.device)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                found += zip(indices, logits.argmax(-1).tolist())
            if bar is not None:
                bar.update(sum(map(len, round_batches)))
    predictions = [0] * len(data)
    for index, label in runtime.gather(found):
        predictions[index] = label
    return predictions


def accuracy(predictions, labels) -> float:
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set")
    return sum(p == y for p, y in zip(predictions, labels)) / len(labels)


def selection_score(model, dev_sets: dict[str, Encoded], batch_size: int, runtime: World, pad_id: int,
                    progress: bool = False) -> tuple[float, dict[str, float]]:
    """Mean accuracy over the selection dev sets (English alone for zero-shot)."""
    with evaluation_bar(dev_sets.values(), "dev", runtime, progress) as bar:
        scores = {lang: accuracy(predict(model, data, batch_size, runtime, pad_id, bar), data.labels)
                  for lang, data in dev_sets.items()}
    return sum(scores.values()) / len(scores), scores


def seed_dropout(seed: int, step: int, rank: int) -> None:
    """Dropout draws from torch's generator, seeded afresh for each step and process: each process
    drops its own units of its own pairs (one seed everywhere would drop the same units on every
    process), and a resumed run draws the killed run's masks without any generator state saved.
    Which pairs a step trains on depends on (seed, epoch) alone, not on this."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def _epoch_batches(data: Encoded, settings: XnliSettings, seed: int, epoch: int, world: int) -> list[list[int]]:
    """A batch smaller than the number of processes would leave one idle: dropped (< world pairs)."""
    batches = length_grouped_batches(data.lengths(), settings.batch_size, seed, epoch)
    return [b for b in batches if len(b) >= world]


def fine_tuning_plan(model, first_epoch: list[list[int]], steps: int, settings: XnliSettings, runtime: World,
                     workdir: Path, done: int = 0) -> Plan:
    """What a seed's fine-tuning will cost, from the batches of its first epoch (every epoch has
    batches of the same sizes: only their order and members change)."""
    pairs_per_epoch = sum(map(len, first_epoch))
    return Plan(models={"classifier": model_size(model)}, unit="pairs", batch=settings.batch_size,
                micro_batch=-(-settings.batch_size // runtime.size), micro_batches=1, processes=runtime.size,
                steps=steps, total=round(pairs_per_epoch * steps / len(first_epoch)), out=workdir, done=done)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, tensor_bytes(obj), partial=tmp):
        with open(tmp, "wb") as file:  # a file object: torch then raises the system's error
            torch.save(obj, file)
        os.replace(tmp, path)


def saved_identity(state_path: Path) -> dict:
    """The identity a resume state was saved with; its tensors are memory-mapped, not read."""
    return torch.load(state_path, map_location="cpu", weights_only=False, mmap=True)["identity"]


def _candidate(workdir: Path, step: int) -> Path:
    return workdir / f"{BEST}.step-{step}"


def _save_candidate(model, tokenizer, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with writing(folder, tensor_bytes(model.state_dict()), partial=tmp, approximate=True):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)


def _settle_best(workdir: Path, best_step: int) -> None:
    """Moves the candidate of the best step recorded in state.pt into ``best/`` and drops the
    others: candidates of evaluations a kill cut off before their state was written. Run after
    every state write and on resume, so a kill at any point leaves ``best/`` agreeing with the
    state the rerun starts from."""
    keep = _candidate(workdir, best_step)
    for candidate in workdir.glob(f"{BEST}.step-*"):
        if candidate == keep:
            shutil.rmtree(workdir / BEST, ignore_errors=True)
            os.replace(candidate, workdir / BEST)
        else:
            shutil.rmtree(candidate)


def fine_tune(model, tokenizer, train: Encoded, dev_sets: dict[str, Encoded], settings: XnliSettings, seed: int,
              workdir: Path, runtime: World, identity: dict, progress: bool = True,
              trackers: Trackers | None = None) -> Selection:
    """Trains ``model`` in place; returns the evaluations with the best one, whose weights are
    in ``workdir/best``. ``identity`` (model, data, settings) must match a state to resume it.
    Each evaluation also goes to ``trackers`` (process 0's)."""
    pad_id = tokenizer.pad_token_id or 0
    model.to(runtime.device)
    first_epoch = _epoch_batches(train, settings, seed, 0, runtime.size)
    steps_per_epoch = len(first_epoch)
    if steps_per_epoch == 0:
        raise UserError(f"{len(train)} training pairs cannot feed {runtime.size} processes")
    total = max(1, round(steps_per_epoch * settings.epochs))
    optimizer = adamw(model, settings.lr, settings.weight_decay, runtime.device)
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps(total), total)
    selection, step = Selection(), 0

    state_path = workdir / STATE
    if state_path.is_file():
        state = torch.load(state_path, map_location=runtime.device, weights_only=False)
        if state["identity"] != identity:
            raise ResumeMismatchError(f"{state_path} belongs to a run with other inputs or settings; rerun "
                                      "with those, or with --force to start this one afresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        selection, step = state["selection"], state["step"]
    if runtime.is_main:
        _settle_best(workdir, selection.best_step)
        tqdm.write(format_plan(fine_tuning_plan(model, first_epoch, total, settings, runtime, workdir, step),
                               f"xnli seed {seed}"), file=sys.stderr)

    trained = DistributedDataParallel(model) if runtime.size > 1 else model
    bar = tqdm(total=total, initial=step, desc=f"seed {seed}", unit="step", disable=not (progress and runtime.is_main),
               dynamic_ncols=True)
    epoch, batches = -1, []
    seen, started = 0, time.perf_counter()
    losses = []  # this process's losses since the last evaluation, kept on the device
    pace = Pace(step, total)
    while step < total:
        step_started = time.perf_counter()
        if step // steps_per_epoch != epoch:
            epoch = step // steps_per_epoch
            batches = _epoch_batches(train, settings, seed, epoch, runtime.size)
        indices = batches[step % steps_per_epoch]
        batch = collate(train, shard(indices, runtime.rank, runtime.size), pad_id, runtime.device)
        trained.train()
        seed_dropout(seed, step, runtime.rank)
        with runtime.autocast():
            loss = trained(**batch).loss
        loss.backward()
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen += len(indices)
        losses.append(loss.detach())
        bar.update(1)
        if not bar.disable and step % 10 == 0:  # .item() waits for the device: not every step
            bar.set_postfix(loss=f"{loss.item():.3f}", ex_s=f"{seen / (time.perf_counter() - started):.1f}")
        if not pace.told and runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)  # only the steps timed for the pace wait for the device
        told = pace.step_done(time.perf_counter() - step_started)
        if told and runtime.is_main:
            bar.write(f"xnli seed {seed}: {told}", file=sys.stderr)
        if step % settings.eval_every == 0 or step == total:
            _evaluate_and_keep(model, tokenizer, dev_sets, settings, selection, step, workdir, runtime, pad_id, bar)
            if runtime.is_main:
                _save_atomic({"identity": identity, "step": step, "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                              "selection": selection}, state_path)
                _settle_best(workdir, selection.best_step)
                if trackers is not None:  # after the state: a resumed run logs no step twice
                    trackers.log(_evaluation_record(selection.history[-1], torch.stack(losses).mean().item(),
                                                    scheduler.get_last_lr()[0]))
            losses = []
            runtime.barrier()
    bar.close()
    return selection


def _evaluation_record(evaluation: dict, train_loss: float, lr: float) -> dict:
    return {"step": evaluation["step"], "train_loss": train_loss, "lr": lr, "dev_accuracy": evaluation["score"],
            **{f"dev_accuracy_{lang}": accuracy for lang, accuracy in evaluation["dev"].items()}}


def _evaluate_and_keep(model, tokenizer, dev_sets, settings, selection: Selection, step: int, workdir: Path,
                       runtime: World, pad_id: int, bar) -> None:
    score, per_language = selection_score(model, dev_sets, settings.eval_batch_size, runtime, pad_id,
                                          progress=not bar.disable)
    selection.history.append({"step": step, "score": score, "dev": per_language})
    if score > selection.best_score:
        selection.best_step, selection.best_score = step, score
        if runtime.is_main:
            _save_candidate(model, tokenizer, _candidate(workdir, step))
    if runtime.is_main:
        bar.write(f"step {step}: selection dev accuracy {100 * score:.2f} "
                  f"(best {100 * selection.best_score:.2f} at step {selection.best_step})")
