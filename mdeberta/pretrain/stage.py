"""``mdeberta pretrain run``: tokenize the corpus once, then train (or continue training)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ..corpora.contract import require_finished_corpus
from ..distributed import close_world, init_world
from ..errors import UserError
from ..locking import output_lock
from ..manifest import write_json_atomic, write_manifest
from ..recipe import output_settings
from .checkpoint import latest_intact_checkpoint
from .settings import PretrainSettings
from .tokens import SPM_MODEL, corpus_changes, tokenize_corpus, vocabulary_size
from .train import Pretrainer, check_resumable


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


def check_continuable(settings: PretrainSettings, corpus: Path, tokenizer: Path, out: Path) -> None:
    """Refuses a run that the checkpoints in ``out`` cannot continue, before anything there is
    rewritten: re-tokenizing another corpus or tokenizer would replace the streams that their
    data position points into (and another vocabulary does not fit their embedding tables)."""
    checkpoint = latest_intact_checkpoint(out / "checkpoints", report=lambda _: None)  # training reports it
    if checkpoint is None:
        return
    check_resumable(checkpoint, settings)
    changes = _tokenizer_change(checkpoint, tokenizer)
    corpus_changed = corpus_changes(out / "tokens", corpus, settings.langs or None)
    if corpus_changed:
        changes.append(f"corpus ({'; '.join(corpus_changed)})")
    if changes:
        raise ChangedInputsError(checkpoint, changes)


def _tokenizer_change(checkpoint: Path, tokenizer: Path) -> list[str]:
    """The checkpoint's copy of spm.model against the one given (a missing one is tokenize_corpus' error)."""
    trained, given = checkpoint / "tokenizer" / SPM_MODEL, tokenizer / SPM_MODEL
    if not (trained.is_file() and given.is_file()) or trained.read_bytes() == given.read_bytes():
        return []
    return [f"tokenizer ({vocabulary_size(trained)} ids; {given} has {vocabulary_size(given)})"]
