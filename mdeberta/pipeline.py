"""``mdeberta pipeline``: the stages of one recipe in order, each in its own folder of the workdir.

    <workdir>/corpus/     stage 1          <workdir>/pretrain/   stage 3
    <workdir>/tokenizer/  stage 2          <workdir>/model/      export of pretrain's last checkpoint
    <workdir>/xnli/<setting>/  stage 4, one folder per XNLI setting; <workdir>/xnli/results.md merges them

With ``[pipeline] sharing = ["es", "nes", "gdes"]`` the model stages run once per embedding
sharing, in ``pretrain-<sharing>/``, ``model-<sharing>/`` and ``xnli-<sharing>/`` beside one corpus
and tokenizer, and ``<workdir>/ablation.md|csv|png`` compares them.

Whether a stage is up to date is each stage's own decision (its manifest); the pipeline only
looks at the manifest and checkpoints before and after to report what happened. A stage that ran
makes every later stage of its chain redo its work. Across commands (``--until``, then a later
run) each stage tells by content what changed: pretraining by the corpus and tokenizer its
checkpoints were trained from, the export by the checkpoint's fingerprint, XNLI by the model's.
Redoing pretraining sets the old run folder aside (renamed, never deleted): it may hold weeks of
GPU time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from .console import log
from .corpora.settings import CorpusSettings
from .errors import UserError
from .locking import output_lock
from .manifest import MANIFEST, write_json_atomic
from .model import SHARING
from .pretrain.settings import PretrainSettings
from .storage import write_text_atomic
from .recipe import SettingsError, build_settings, load_recipe_section, setting, tomllib
from .tokenizer.settings import TokenizerSettings
from .xnli.data import DEFAULT_DATA
from .xnli.settings import PROTOCOLS, XnliSettings

STAGES = ("corpus", "tokenizer", "pretrain", "export", "xnli")
ABLATION_PLOT = "ablation.png"


class PipelineError(UserError):
    pass


@dataclass
class PipelineSettings:
    xnli_data: str = setting(DEFAULT_DATA, "XNLI data: hub dataset name, a folder of saved datasets per "
                             "language, or a folder holding the unpacked XNLI-1.0/ and XNLI-MT-1.0/")
    xnli_settings: list[str] = setting([], "XNLI settings to run, each in xnli/<setting>/ (default: the [xnli] "
                                       "section's setting)")
    sharing: list[str] = setting([], "pretrain one model per embedding sharing (es, nes, gdes) on the same "
                                 "corpus and tokenizer and compare them in ablation.md (default: one model with "
                                 "the [pretrain] section's sharing)")

    def __post_init__(self):
        for name, allowed in (("xnli_settings", PROTOCOLS), ("sharing", SHARING)):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise SettingsError(f"[pipeline] {name}: {', '.join(map(str, unknown))} not one of "
                                    f"{', '.join(allowed)}")


@dataclass
class Recipe:
    """Every section of a recipe, validated before any stage starts."""
    path: Path
    corpus: CorpusSettings
    tokenizer: TokenizerSettings
    pretrain: PretrainSettings
    xnli: XnliSettings
    pipeline: PipelineSettings

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        sections = {"corpus": CorpusSettings, "tokenizer": TokenizerSettings, "pretrain": PretrainSettings,
                    "xnli": XnliSettings, "pipeline": PipelineSettings}
        load_recipe_section(path, "pipeline")  # a missing file or bad TOML is reported here
        unknown = set(tomllib.loads(path.read_text(encoding="utf-8"))) - set(sections)
        if unknown:
            raise SettingsError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; a recipe has "
                                f"{', '.join(sections)}")
        recipe = cls(path, **{name: build_settings(kind, path, name) for name, kind in sections.items()})
        recipe.xnli_runs()  # each XNLI setting's settings are checked now, not after pretraining
        return recipe

    @property
    def sharings(self) -> list[str]:
        return list(dict.fromkeys(self.pipeline.sharing)) or [self.pretrain.sharing]

    @property
    def xnli_settings(self) -> list[str]:
        return self.pipeline.xnli_settings or [self.xnli.setting]

    def xnli_runs(self) -> dict[str, XnliSettings]:
        """The [xnli] settings once per XNLI setting to run (``replace`` re-runs their validation)."""
        return {name: replace(self.xnli, setting=name) for name in self.xnli_settings}


@dataclass
class StageResult:
    stage: str
    label: str
    folder: Path
    status: str = "not run"
    elapsed_s: float = 0.0


@dataclass
class _Step:
    stage: str
    label: str  # the stage, with the sharing when several are compared
    folder: Path
    run: Callable[[bool], int]  # run(redo) -> exit status
    state: Callable[[], tuple[bool, object]]  # (finished?, a snapshot of the outputs) before and after a run
    chain: str = ""  # the model chain (sharing) it belongs to; "" for the shared corpus and tokenizer
    has_progress: Callable[[], bool] = lambda: False  # holds work a run continues from (not the tokenizer, export)


def _manifest_state(*paths: Path) -> tuple[bool, object]:
    stamps = [path.stat().st_mtime_ns if path.exists() else None for path in paths]
    return None not in stamps, stamps


def _has_content(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


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
        self.progress = progress
        self.echo = echo
        self.steps = self._plan()

    # ------------------------------------------------------------------------------------ plan

    def _plan(self) -> list[_Step]:
        corpus, tokenizer = self.workdir / "corpus", self.workdir / "tokenizer"
        steps = [
            _Step("corpus", "corpus", corpus, lambda redo: self._corpus(corpus, redo),
                  lambda: _manifest_state(corpus / MANIFEST), has_progress=lambda: _has_content(corpus)),
            _Step("tokenizer", "tokenizer", tokenizer, lambda redo: self._tokenizer(corpus, tokenizer, redo),
                  lambda: _manifest_state(tokenizer / MANIFEST)),
        ]
        for sharing in self.recipe.sharings:
            steps += self._model_steps(sharing, corpus, tokenizer)
        return steps

    def _model_steps(self, sharing: str, corpus: Path, tokenizer: Path) -> list[_Step]:
        from .pretrain.checkpoint import checkpoint_fingerprint, latest_checkpoint

        label = f" ({sharing})" if self.ablation else ""
        pretrain, model, xnli = (self._folder(name, sharing) for name in ("pretrain", "model", "xnli"))
        settings = replace(self.recipe.pretrain, sharing=sharing)
        reports = [xnli / name / MANIFEST for name in self.recipe.xnli_settings] + [xnli / "results.md"]

        def pretrain_state():  # the stage rewrites its manifest even when it had nothing left to do
            checkpoint = latest_checkpoint(pretrain / "checkpoints")
            return (pretrain / MANIFEST).exists(), checkpoint and checkpoint_fingerprint(checkpoint)

        return [
            _Step("pretrain", f"pretrain{label}", pretrain,
                  lambda redo: self._pretrain(settings, corpus, tokenizer, pretrain, redo), pretrain_state, sharing,
                  has_progress=lambda: latest_checkpoint(pretrain / "checkpoints") is not None),
            _Step("export", f"export{label}", model, lambda redo: self._export(pretrain, model, redo),
                  lambda: _manifest_state(model / "export.json"), sharing),
            _Step("xnli", f"xnli{label}", xnli, lambda redo: self._xnli(model, xnli, redo),
                  lambda: _manifest_state(*reports), sharing, has_progress=lambda: _has_content(xnli)),
        ]

    @property
    def ablation(self) -> bool:
        return len(self.recipe.sharings) > 1

    def _folder(self, name: str, sharing: str) -> Path:
        return self.workdir / (f"{name}-{sharing}" if self.ablation else name)

    # ------------------------------------------------------------------------------------ stages

    def _corpus(self, out: Path, redo: bool) -> int:
        from .corpora.prepare import CorpusStage

        return CorpusStage(self.recipe.corpus, out, progress=self.progress, echo=self.echo).run(force=redo)

    def _tokenizer(self, corpus: Path, out: Path, redo: bool) -> int:
        from .tokenizer.stage import TokenizerStage

        return TokenizerStage(self.recipe.tokenizer, corpus, out, self.progress, self.echo).run(force=redo)

    def _pretrain(self, settings: PretrainSettings, corpus: Path, tokenizer: Path, out: Path, redo: bool) -> int:
        from .pretrain.stage import run_pretraining

        if redo:
            _set_aside(out, "an earlier stage changed (or --force)")
        elif changed := _changed_inputs(settings, corpus, tokenizer, out):
            _set_aside(out, f"its checkpoints were trained from another {changed} (redone since)")
        else:
            self._refuse_continuing_a_torchrun_run(settings, corpus, tokenizer, out)
        return run_pretraining(settings, corpus, tokenizer, out, progress=self.progress)

    def _refuse_continuing_a_torchrun_run(self, settings: PretrainSettings, corpus: Path, tokenizer: Path,
                                          out: Path) -> None:
        """An unfinished run that torchrun started would otherwise go on here, in one process: at
        paper scale, on one GPU for months."""
        from .pretrain.checkpoint import checkpoints, trained_world_size

        found = checkpoints(out / "checkpoints")
        if not found or found[-1][0] >= settings.max_steps:
            return
        processes = trained_world_size(found[-1][1])
        if processes > 1:
            sharing = f" --sharing {settings.sharing}" if self.ablation else ""
            raise PipelineError(
                f"{found[-1][1]} was trained by {processes} processes and the run is not finished; continue it "
                f"under torchrun as it was started (`torchrun --nproc_per_node=N -m mdeberta pretrain run --recipe "
                f"{self.recipe.path}{sharing} --corpus {corpus} --tokenizer {tokenizer} --out {out}`, see "
                "docs/scale.md), then rerun the pipeline; --force pretrain starts over in this one process")

    def _export(self, pretrain: Path, out: Path, redo: bool) -> int:
        from .pretrain.checkpoint import checkpoint_fingerprint, latest_checkpoint
        from .pretrain.export import export_checkpoint

        checkpoint = latest_checkpoint(pretrain / "checkpoints")
        if checkpoint is None:
            raise PipelineError(f"{pretrain / 'checkpoints'}: no checkpoint to export; run the pretrain stage first")
        try:
            exported = json.loads((out / "export.json").read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError):
            exported = None
        if not redo and exported == checkpoint_fingerprint(checkpoint):
            log(f"export: {out} holds {checkpoint.name} already; nothing to do")
            return 0
        for folder in export_checkpoint(checkpoint, out).values():
            log(f"export: {checkpoint.name} -> {folder}")
        return 0

    def _xnli(self, model: Path, out: Path, redo: bool) -> int:
        from .xnli.report import write_report
        from .xnli.stage import XnliRun

        discriminator = model / "discriminator"
        if not (discriminator / "config.json").is_file():
            raise PipelineError(f"{discriminator}: no exported model; run the export stage first")
        runs = [out / name for name in self.recipe.xnli_settings]
        before = _manifest_state(*(run / MANIFEST for run in runs))
        for settings, run_dir in zip(self.recipe.xnli_runs().values(), runs):
            run = XnliRun(settings, str(discriminator), self.recipe.pipeline.xnli_data, run_dir, self.progress)
            stale = not redo and run.made_from_other_inputs()
            if stale:
                log(f"pipeline: {run_dir} was fine-tuned from another model or data; redoing it")
            status = run.run(force=redo or stale)
            if status:
                return status
        if redo or before != _manifest_state(*(run / MANIFEST for run in runs)) or \
                not (out / "results.md").is_file():
            write_report(runs, out)  # all settings in one table and chart
        return 0

    # ------------------------------------------------------------------------------------ run

    def run(self) -> int:
        with output_lock(self.workdir):
            return self._run()

    def _run(self) -> int:
        results = [StageResult(step.stage, step.label, step.folder) for step in self.steps]
        redo_all, redo_chains = False, set()
        status = 0
        try:
            for step, result in zip(self.steps, results):
                if step.stage not in self.selected:
                    self._check_finished(step)
                    continue
                redo = step.stage in self.force or redo_all or step.chain in redo_chains
                status = self._run_step(step, result, redo)
                if result.status != "skipped":  # what comes after was made from the old outputs
                    if step.chain:
                        redo_chains.add(step.chain)
                    else:
                        redo_all = True
                if status:
                    result.status = f"stopped (exit {status})"
                    break
        except KeyboardInterrupt:
            for result in results:
                if result.status == "running":
                    result.status = "interrupted"
            self._summarise(results)
            raise
        changed = any(result.status not in ("skipped", "not run") for result in results)
        if (not status and self.ablation and self.selected[-1] == STAGES[-1]
                and (changed or not (self.workdir / "ablation.md").is_file())):
            self._write_ablation()  # reloads every checkpoint: only when something changed
        self._summarise(results)
        return status

    def _run_step(self, step: _Step, result: StageResult, redo: bool) -> int:
        finished_before, before = step.state()
        partial = not finished_before and step.has_progress()  # e.g. no checkpoint yet: pretraining starts over
        result.status = "running"
        redone = " (redo: --force or an earlier stage changed)" if redo and _has_content(step.folder) else ""
        log(f"pipeline: {step.label} -> {step.folder}{redone}")
        started = time.time()
        status = step.run(redo)
        result.elapsed_s = time.time() - started
        if not redo and finished_before and step.state() == (True, before):
            result.status = "skipped"
        else:
            result.status = "resumed" if partial and not redo else "done"
        return status

    def _check_finished(self, step: _Step) -> None:
        """A stage before --from must have finished: a later stage would read half its outputs."""
        if STAGES.index(step.stage) < STAGES.index(self.selected[0]) and not step.state()[0]:
            raise PipelineError(f"--from {self.selected[0]}: {step.folder} is not finished; run the "
                                f"{step.stage} stage first (leave out --from)")

    # ------------------------------------------------------------------------------------ reports

    def _write_ablation(self) -> None:
        from .pretrain.plot import write_overlay

        runs = {s: (self._folder("pretrain", s), self._folder("xnli", s)) for s in self.recipe.sharings}
        table = compare_sharing(runs)
        write_text_atomic(self.workdir / "ablation.csv", table.to_csv(index=False, float_format="%.4f"))
        write_overlay({sharing: pretrain for sharing, (pretrain, _) in runs.items()}, self.workdir / ABLATION_PLOT)
        write_text_atomic(self.workdir / "ablation.md",
            "# Embedding sharing compared\n\nPer run: the last validation in metrics.jsonl, the average cosine "
            "similarity of word-embedding pairs (DeBERTaV3's Table 1; `paper_*` are its base-size figures) and "
            "XNLI test accuracy (mean over seeds, averaged over languages).\n\n"
            + table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".4f", missingval="")
            + f"\n\n## Pretraining curves\n\nThe runs' metrics.jsonl over each other ({ABLATION_PLOT}; training "
            "solid, validation dashed):\n\n"
            f"![pretraining curves of {', '.join(runs)}]({ABLATION_PLOT})\n")

    def _summarise(self, results: list[StageResult]) -> None:
        table = pd.DataFrame([{"stage": r.label, "status": r.status, "time": _duration(r.elapsed_s),
                               "output": str(r.folder)} for r in results])
        write_json_atomic(self.workdir / "pipeline.json",
                          {"recipe": str(self.recipe.path),
                           "stages": [{"stage": r.stage, "label": r.label, "status": r.status,
                                       "elapsed_s": round(r.elapsed_s, 2), "output": str(r.folder)}
                                      for r in results]})
        lines = ["", table.to_markdown(index=False)]
        reports = [self._folder("xnli", s) / "results.md" for s in self.recipe.sharings]
        lines += [f"XNLI report: {report}" for report in reports if report.is_file()]
        if (self.workdir / "ablation.md").is_file():
            lines.append(f"Ablation: {self.workdir / 'ablation.md'}")
        self.echo("\n".join(lines))


def _set_aside(folder: Path, why: str) -> None:
    if folder.exists():
        aside = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        log(f"pipeline: {why}; {folder} set aside as {aside}")
        folder.rename(aside)


def _changed_inputs(settings: PretrainSettings, corpus: Path, tokenizer: Path, out: Path) -> str:
    """What of the corpus and tokenizer changed since ``out``'s checkpoints were trained ("" when
    nothing did), e.g. a tokenizer redone by an earlier command: the pretrain stage itself would
    refuse to continue, while in the pipeline such a run is redone. Changed [pretrain] settings stop
    the pipeline instead: they are more likely a slip than a new run, and the run may hold weeks of
    GPU time."""
    from .pretrain.stage import ChangedInputsError, check_continuable
    from .pretrain.train import ChangedSettingsError

    try:
        check_continuable(settings, corpus, tokenizer, out)
    except ChangedInputsError as err:
        return " and ".join(err.changes)
    except ChangedSettingsError as err:
        raise PipelineError(f"{err.checkpoint} was trained with other [pretrain] settings ({err.details}); set them "
                            "back to continue the run, or add --force pretrain to start over (the run is set aside "
                            f"as {out.name}.replaced-<date>)") from None
    return ""


def _duration(seconds: float) -> str:
    if not seconds:
        return "-"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def compare_sharing(runs: dict[str, tuple[Path, Path]], pairs: int = 100_000) -> pd.DataFrame:
    """One row per embedding sharing from its pretrain and xnli folders; what a run lacks stays empty."""
    from .pretrain.analyze import embedding_statistics
    from .pretrain.checkpoint import latest_checkpoint
    from .pretrain.plot import read_records

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

