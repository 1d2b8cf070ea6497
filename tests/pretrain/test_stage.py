"""Pretraining and export as pipeline stages: what each tells of itself before any run."""

from __future__ import annotations

from dataclasses import replace

from mdeberta.pretrain.settings import PretrainSettings
from mdeberta.pretrain.stage import ExportStage, PretrainStage
from mdeberta.stage import Status

SETTINGS = PretrainSettings(size="tiny", batch_size=4, micro_batch_size=4, max_seq_length=32, max_steps=2,
                            warmup_steps=1, learning_rate=1e-3, log_every=1, eval_every=0, eval_sequences=4,
                            checkpoint_every=100, tokenize_workers=1, validation_fraction=0.2)


def test_a_lengthened_run_and_then_its_export_are_stale_until_redone(corpus_dir, tokenizer, tmp_path):
    def pretraining(settings: PretrainSettings) -> PretrainStage:
        return PretrainStage(settings, corpus_dir, tokenizer, tmp_path / "pretrain", tmp_path / "recipe.toml",
                             progress=False)

    export = ExportStage(tmp_path / "pretrain", tmp_path / "model")
    assert pretraining(SETTINGS).status() is export.status() is Status.ABSENT
    assert pretraining(SETTINGS).run() == 0 and export.run() == 0
    assert pretraining(SETTINGS).status() is export.status() is Status.FINISHED
    longer = pretraining(replace(SETTINGS, max_steps=4))
    assert longer.status() is Status.STALE and export.status() is Status.FINISHED
    assert longer.run() == 0
    assert longer.status() is Status.FINISHED and export.status() is Status.STALE  # a newer checkpoint
    assert pretraining(replace(SETTINGS, max_steps=4, learning_rate=2e-3)).status() is Status.STALE
