"""The pretrain package's two stages: pretraining (``mdeberta pretrain run``: tokenize the corpus
once, then train or continue training) and the export of a run's latest checkpoint."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ..console import log
from ..corpora.contract import require_finished_corpus
from ..distributed import close_world, init_world
from ..errors import UserError
from ..locking import output_lock
from ..manifest import MANIFEST, write_json_atomic, write_manifest
from ..settings import SettingsError, output_settings
from ..stage import Stage, StageError
from .checkpoint import (STEP_DIR, CheckpointError, checkpoint_fingerprint, checkpoints, latest_checkpoint,
                         latest_intact_checkpoint, trained_world_size)
from .export import export_checkpoint, exported_fingerprint
from .settings import PretrainSettings
from .tokens import SPM_MODEL, corpus_changes, tokenize_corpus, vocabulary_size
from .train import ChangedSettingsError, Pretrainer, check_resumable


class ChangedInputsError(UserError):
    """A run folder's checkpoints were trained from another corpus or tokenizer."""

    def __init__(self, checkpoint: Path, changes: list[str]):
        self.checkpoint, self.changes = checkpoint, changes
        super().__init__(f"{checkpoint} was trained from another {' and '.join(changes)}; use the same corpus and "
                         f"tokenizer to resume, or pass another --out (or delete {checkpoint.parent.parent}) to "
                         "start a new run")


def run_pretraining(settings: PretrainSettings, corpus: Path, tokenizer: Path, out: Path, resume: bool = False,
                    progress: bool = True) -> int:
    require_finished_corpus(corpus)
    with output_lock(out):
        return _run_pretraining(settings, Path(corpus), Path(tokenizer), Path(out), resume, progress)


def _run_pretraining(settings: PretrainSettings, corpus: Path, tokenizer: Path, out: Path, resume: bool,
                     progress: bool) -> int:
    started = time.time()
    world = init_world(settings.precision)
    try:
        check_continuable(settings, corpus, tokenizer, out)  # on every process: all stop alike
        tokens = out / "tokens"
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "settings.json", asdict(settings))
            tokenize_corpus(corpus, tokenizer, tokens, langs=settings.langs or None,
                            validation_fraction=settings.validation_fraction, workers=settings.tokenize_workers,
                            progress=progress)
        world.wait_for_main()
        status = Pretrainer(settings, tokens, tokenizer, out, world, progress).train(resume)
        if status == 0 and world.is_main:
            inputs = [{"corpus": str(corpus), "tokenizer": str(tokenizer)}]
            write_manifest(out, "pretrain", inputs, output_settings(settings), started,
                           outputs={"checkpoints": "checkpoints", "metrics": "metrics.jsonl", "tokens": "tokens"},
                           packages=("torch", "transformers", "sentencepiece"))
        return status
    finally:
        close_world(world)


def check_continuable(settings: PretrainSettings, corpus: Path, tokenizer: Path, out: Path) -> Path | None:
    """Refuses a run that the checkpoints in ``out`` cannot continue, before anything there is
    rewritten: re-tokenizing another corpus or tokenizer would replace the streams that their
    data position points into (and another vocabulary does not fit their embedding tables).
    Returns the checkpoint a run continues from (None: it starts afresh)."""
    checkpoint = latest_intact_checkpoint(out / "checkpoints", report=lambda _: None)  # training reports it
    if checkpoint is None:
        return None
    check_resumable(checkpoint, settings)
    changes = _tokenizer_change(checkpoint, tokenizer)
    corpus_changed = corpus_changes(out / "tokens", corpus, settings.langs or None)
    if corpus_changed:
        changes.append(f"corpus ({'; '.join(corpus_changed)})")
    if changes:
        raise ChangedInputsError(checkpoint, changes)
    return checkpoint


def _tokenizer_change(checkpoint: Path, tokenizer: Path) -> list[str]:
    """The checkpoint's copy of spm.model against the one given (a missing one is tokenize_corpus' error)."""
    trained, given = checkpoint / "tokenizer" / SPM_MODEL, tokenizer / SPM_MODEL
    if not (trained.is_file() and given.is_file()) or trained.read_bytes() == given.read_bytes():
        return []
    return [f"tokenizer ({vocabulary_size(trained)} ids; {given} has {vocabulary_size(given)})"]


class PretrainStage(Stage):
    """Pretraining in a pipeline's workdir. Where ``mdeberta pretrain run`` refuses to continue a
    run trained from another corpus or tokenizer, this stage redoes it; the old run is set aside
    (renamed, never deleted: it may hold weeks of GPU time). Changed [pretrain] settings stop it
    instead: they are more likely a slip than a new run."""
    name = "pretrain"

    def __init__(self, settings: PretrainSettings, corpus: str | Path, tokenizer: str | Path, out: str | Path,
                 recipe: Path, progress: bool = True):
        self.settings = settings
        self.corpus, self.tokenizer, self.folder = Path(corpus), Path(tokenizer), Path(out)
        self.reads = (self.corpus, self.tokenizer)
        self.recipe = recipe  # named in the command that continues a run under torchrun
        self.progress = progress

    def complete(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def begun(self) -> bool:
        return latest_checkpoint(self.folder / "checkpoints") is not None

    def up_to_date(self) -> bool:
        """Trained to max_steps from this corpus and tokenizer, with these settings: a lengthened
        run is not."""
        try:
            checkpoint = check_continuable(self.settings, self.corpus, self.tokenizer, self.folder)
        except (ChangedInputsError, ChangedSettingsError, CheckpointError):
            return False
        return checkpoint is not None and int(STEP_DIR.match(checkpoint.name).group(1)) >= self.settings.max_steps

    def run(self, *, force: bool = False) -> int:
        if force:
            self._set_aside("an earlier stage changed (or --force)")
        elif changed := self._changed_inputs():
            self._set_aside(f"its checkpoints were trained from another {changed} (redone since)")
        else:
            self._refuse_continuing_a_torchrun_run()
        return run_pretraining(self.settings, self.corpus, self.tokenizer, self.folder, progress=self.progress)

    def _changed_inputs(self) -> str:
        """What of the corpus and tokenizer changed since the checkpoints were trained ("" when
        nothing did), e.g. a tokenizer redone by an earlier command."""
        try:
            check_continuable(self.settings, self.corpus, self.tokenizer, self.folder)
        except ChangedInputsError as err:
            return " and ".join(err.changes)
        except ChangedSettingsError as err:
            raise SettingsError(
                f"{err.checkpoint} was trained with other [pretrain] settings ({err.details}); set them back to "
                "continue the run, or add --force pretrain to start over (the run is set aside as "
                f"{self.folder.name}.replaced-<date>)") from None
        return ""

    def _set_aside(self, why: str) -> None:
        if self.folder.exists():
            aside = self.folder.with_name(f"{self.folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            log(f"pretrain: {why}; {self.folder} set aside as {aside}")
            self.folder.rename(aside)

    def _refuse_continuing_a_torchrun_run(self) -> None:
        """An unfinished run that torchrun started would otherwise go on here, in one process: at
        paper scale, on one GPU for months."""
        found = checkpoints(self.folder / "checkpoints")
        if not found or found[-1][0] >= self.settings.max_steps:
            return
        processes = trained_world_size(found[-1][1])
        if processes > 1:
            raise StageError(
                f"{found[-1][1]} was trained by {processes} processes and the run is not finished; continue it "
                f"under torchrun as it was started (`torchrun --nproc_per_node=N -m mdeberta pretrain run --recipe "
                f"{self.recipe} --sharing {self.settings.sharing} --corpus {self.corpus} --tokenizer "
                f"{self.tokenizer} --out {self.folder}`, see docs/scale.md), then rerun the pipeline; --force pretrain "
                "starts over in this one process")


class ExportStage(Stage):
    """A run's latest checkpoint as transformers folders, redone whenever that checkpoint changes:
    a lengthened run is re-exported with nothing else redone."""
    name = "export"

    def __init__(self, run: str | Path, out: str | Path):
        self.checkpoints = Path(run) / "checkpoints"
        self.folder = Path(out)
        self.reads = (Path(run),)

    def complete(self) -> bool:
        return exported_fingerprint(self.folder) is not None

    def begun(self) -> bool:
        return False  # every export writes both folders anew

    def up_to_date(self) -> bool:
        checkpoint = latest_checkpoint(self.checkpoints)
        return checkpoint is not None and exported_fingerprint(self.folder) == checkpoint_fingerprint(checkpoint)

    def run(self, *, force: bool = False) -> int:
        checkpoint = latest_checkpoint(self.checkpoints)
        if checkpoint is None:
            raise StageError(f"{self.checkpoints}: no checkpoint to export; run the pretrain stage first")
        if not force and self.up_to_date():
            log(f"export: {self.folder} holds {checkpoint.name} already; nothing to do")
            return 0
        for folder in export_checkpoint(checkpoint, self.folder).values():
            log(f"export: {checkpoint.name} -> {folder}")
        return 0
