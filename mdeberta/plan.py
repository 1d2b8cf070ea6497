"""What a training run will cost: its plan, told before the first step, and its pace, told once the
first steps are timed. Shared by the pretraining and XNLI loops, whose first step can take minutes
(8,192 sequences at the paper's defaults) before a progress bar can estimate anything."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    embeddings: int  # of them in ``embeddings`` modules: the token and absolute-position tables


def model_size(model: nn.Module) -> ModelSize:
    """Each parameter once, a table shared between two modules included."""
    named = dict(model.named_parameters())
    embeddings = sum(p.numel() for name, p in named.items() if "embeddings" in name.split("."))
    return ModelSize(sum(p.numel() for p in named.values()), embeddings)


@dataclass(frozen=True)
class Plan:
    """The figures of a run, all processes together unless said otherwise."""
    models: dict[str, ModelSize]
    unit: str  # what a batch holds: "sequences" (pretraining) or "pairs" (XNLI)
    batch: int  # of them per optimizer step
    micro_batch: int  # of them per forward pass on one process
    micro_batches: int  # forward passes per process per step: gradient accumulation
    processes: int
    steps: int
    total: int  # units over the whole run
    out: Path  # where the run writes
    done: int = 0  # steps trained before this session (a resumed run)
    tokens_per_sequence: int = 0  # fixed length of every sequence; 0: padded per batch

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.tokens_per_sequence


def format_plan(plan: Plan, stage: str) -> str:
    """A few console lines, with the figures rounded; ``Plan`` keeps them exact."""
    first, *others = plan.models.items()
    models = [f"{first[0]} {_count(first[1].parameters)} parameters ({_count(first[1].embeddings)} in embeddings)"]
    models += [f"{name} {_count(size.parameters)} ({_count(size.embeddings)})" for name, size in others]
    step = f"{plan.batch:,} {plan.unit}"
    if plan.tokens_per_sequence:
        step += f" x {plan.tokens_per_sequence:,} tokens = {_count(plan.tokens_per_step)} tokens"
    processes = f"{plan.processes} process{'es' if plan.processes > 1 else ''}"
    step += (f": {plan.micro_batches:,} micro-batch{'es' if plan.micro_batches > 1 else ''} of "
             f"{plan.micro_batch:,} {plan.unit} on each of {processes}")
    run = f"{plan.steps:,} steps, {_count(plan.total)} {plan.unit}"
    if plan.tokens_per_sequence:
        run += f" = {_count(plan.total * plan.tokens_per_sequence)} tokens"
    if plan.done:
        run += f" (resuming after step {plan.done:,}: {plan.steps - plan.done:,} to go)"
    return "\n".join([f"{stage}: plan", f"  models    {'; '.join(models)}", f"  a step    {step}",
                      f"  the run   {run}", f"  writes    {plan.out}"])


def _count(number: int) -> str:
    """Three significant figures: 86.4M, 2.10T."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.3g}{suffix}"
    return str(number)


class Pace:
    """Times each step and tells once what the rest of the run will take. The first step carries
    one-off costs (memory allocation, compilation), so the pace is that of the steps after it,
    unless the first alone took a minute: waiting for a second would leave the user guessing."""

    PATIENCE_S = 60.0

    def __init__(self, done: int, steps: int):
        self.done, self.steps = done, steps
        self.durations: list[float] = []
        self.told = False

    def step_done(self, seconds: float) -> str | None:
        """The line to print, once; None before and after."""
        self.durations.append(seconds)
        if self.told or (len(self.durations) < 2 and seconds < self.PATIENCE_S):
            return None
        self.told = True
        timed = self.durations[1:] or self.durations
        per_step = sum(timed) / len(timed)
        left = self.steps - self.done - len(self.durations)
        if not left:
            return None
        which = "the first step, start-up included" if len(self.durations) == 1 else \
            f"{len(timed)} step{'s' if len(timed) > 1 else ''} after the first"
        ends = time.strftime("%a %H:%M", time.localtime(time.time() + left * per_step))
        return (f"{duration(per_step)} a step ({which}); {left:,} step{'s' if left > 1 else ''} left: about {duration(left * per_step)}, "
                f"until {ends} (evaluations and checkpoints not counted)")


def duration(seconds: float) -> str:
    """Two units at most, the second rounded: 0.41 s, 8 min 18 s, 5 h 24 min, 12 d 3 h."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h"
