"""``mdeberta pipeline``: the stages of one recipe in order, each in its own folder of the workdir.

    <workdir>/corpus/     stage 1          <workdir>/pretrain/   stage 3
    <workdir>/tokenizer/  stage 2          <workdir>/model/      export of pretrain's last checkpoint
    <workdir>/xnli/<setting>/  stage 4, one folder per XNLI setting; <workdir>/xnli/results.md merges them

With ``[pipeline] sharing = ["es", "nes", "gdes"]`` the model stages run once per embedding
sharing, in ``pretrain-<sharing>/``, ``model-<sharing>/`` and ``xnli-<sharing>/`` beside one corpus
and tokenizer, and ``<workdir>/ablation.md|csv|png`` compares them.

Each stage tells its own status (``mdeberta.stage``): a finished one is skipped, any other runs.
A stage that ran makes every stage that reads its folder redo its work, and so on down the chain.
Across commands (``--until``, then a later run) each stage tells by content what changed:
pretraining by the corpus and tokenizer its checkpoints were trained from, the export by the
checkpoint's fingerprint, XNLI by the model's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from .console import log
from .errors import UserError
from .locking import output_lock
from .manifest import write_json_atomic
from .recipe import Recipe
from .stage import Stage, Status

STAGES = ("corpus", "tokenizer", "pretrain", "export", "xnli")


class PipelineError(UserError):
    pass


@dataclass
class Step:
    """A stage as this pipeline runs it; the label tells the model chains of an ablation apart."""
    label: str
    stage: Stage
    status: str = "not run"
    elapsed_s: float = 0.0

    @property
    def folder(self) -> Path:
        return self.stage.folder


class Pipeline:
    def __init__(self, recipe: str | Path, workdir: str | Path, first: str = STAGES[0], last: str = STAGES[-1],
                 force: tuple[str, ...] = (), progress: bool = True, echo: Callable[[str], None] = print):
        for name in (first, last, *force):
            if name not in STAGES:
                raise PipelineError(f"unknown stage '{name}'; the stages are {', '.join(STAGES)}")
        if STAGES.index(first) > STAGES.index(last):
            raise PipelineError(f"--from {first} comes after --until {last}")
        self.selected = STAGES[STAGES.index(first):STAGES.index(last) + 1]
        outside = [name for name in force if name not in self.selected]
        if outside:
            raise PipelineError(f"--force {outside[0]}: not among the stages this run does "
                                f"({', '.join(self.selected)}); widen --from/--until or leave it out")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise PipelineError("mdeberta pipeline runs in one process: under torchrun, start the pretrain and "
                                "xnli stages themselves (`torchrun ... -m mdeberta pretrain run ...`); see docs/scale.md")
        self.recipe = Recipe.load(recipe)
        self.workdir = Path(workdir)
        self.force = set(force)
        self.echo = echo
        self.ablation_report = self.workdir / "ablation.md"
        self.steps = self._plan(progress)

    def _plan(self, progress: bool) -> list[Step]:
        from .corpora.stage import CorpusStage
        from .pretrain.stage import ExportStage, PretrainStage
        from .tokenizer.stage import TokenizerStage
        from .xnli.stage import XnliStage

        recipe, corpus, tokenizer = self.recipe, self.workdir / "corpus", self.workdir / "tokenizer"
        steps = [Step("corpus", CorpusStage(recipe.corpus, corpus, progress, self.echo)),
                 Step("tokenizer", TokenizerStage(recipe.tokenizer, corpus, tokenizer, progress, self.echo))]
        for sharing in recipe.sharings:
            label = f" ({sharing})" if self.ablation else ""
            pretrain, model, xnli = (self._folder(name, sharing) for name in ("pretrain", "model", "xnli"))
            settings = replace(recipe.pretrain, sharing=sharing)
            steps += [
                Step(f"pretrain{label}", PretrainStage(settings, corpus, tokenizer, pretrain, recipe.path, progress)),
                Step(f"export{label}", ExportStage(pretrain, model)),
                Step(f"xnli{label}", XnliStage(recipe.xnli_runs(), model, recipe.pipeline.xnli_data, xnli, progress)),
            ]
        return steps

    @property
    def ablation(self) -> bool:
        return len(self.recipe.sharings) > 1

    def _folder(self, name: str, sharing: str) -> Path:
        return self.workdir / (f"{name}-{sharing}" if self.ablation else name)

    def run(self) -> int:
        with output_lock(self.workdir):
            try:
                status = self._run_steps()
            except KeyboardInterrupt:
                for step in self.steps:
                    if step.status == "running":
                        step.status = "interrupted"
                self._summarise()
                raise
            if not status and self.ablation and self.selected[-1] == STAGES[-1]:
                self._write_ablation()
            self._summarise()
            return status

    def _run_steps(self) -> int:
        made: set[Path] = set()  # the folders this run wrote: a stage that reads one redoes its work
        for step in self.steps:
            if step.stage.name not in self.selected:
                self._require_complete(step)
                continue
            redo = step.stage.name in self.force or any(source in made for source in step.stage.reads)
            status = self._run_step(step, redo)
            if step.status != "skipped":
                made.add(step.folder)
            if status:
                step.status = f"stopped (exit {status})"
                return status
        return 0

    def _run_step(self, step: Step, redo: bool) -> int:
        status = step.stage.status()
        if status is Status.FINISHED and not redo:
            log(f"pipeline: {step.label} -> {step.folder} is finished; skipped")
            step.status = "skipped"
            return 0
        redone = "; redo: --force or an earlier stage changed" if redo and status is not Status.ABSENT else ""
        log(f"pipeline: {step.label} -> {step.folder} ({status.value}{redone})")
        step.status = "running"
        started = time.time()
        exit_status = step.stage.run(force=redo)
        step.elapsed_s = time.time() - started
        step.status = "resumed" if status is Status.PARTIAL and not redo else "done"
        return exit_status

    def _require_complete(self, step: Step) -> None:
        """A stage before --from must be complete: a later stage would read half its outputs."""
        if STAGES.index(step.stage.name) < STAGES.index(self.selected[0]) and not step.stage.complete():
            raise PipelineError(f"--from {self.selected[0]}: {step.folder} is not finished; run the "
                                f"{step.stage.name} stage first (leave out --from)")

    def _write_ablation(self) -> None:
        """Reloads every checkpoint: only when a stage ran or the report is missing."""
        from .pretrain.ablation import write_ablation

        if all(step.status in ("skipped", "not run") for step in self.steps) and self.ablation_report.is_file():
            return
        write_ablation({s: (self._folder("pretrain", s), self._folder("xnli", s)) for s in self.recipe.sharings},
                       self.ablation_report)

    def _summarise(self) -> None:
        write_json_atomic(self.workdir / "pipeline.json",
                          {"recipe": str(self.recipe.path),
                           "stages": [{"stage": s.stage.name, "label": s.label, "status": s.status,
                                       "elapsed_s": round(s.elapsed_s, 2), "output": str(s.folder)}
                                      for s in self.steps]})
        table = pd.DataFrame([{"stage": s.label, "status": s.status, "time": _duration(s.elapsed_s),
                               "output": str(s.folder)} for s in self.steps])
        lines = ["", table.to_markdown(index=False)]
        lines += [f"XNLI report: {s.stage.report}" for s in self.steps
                  if s.stage.name == "xnli" and s.stage.report.is_file()]
        if self.ablation_report.is_file():
            lines.append(f"Ablation: {self.ablation_report}")
        self.echo("\n".join(lines))


def _duration(seconds: float) -> str:
    if not seconds:
        return "-"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
