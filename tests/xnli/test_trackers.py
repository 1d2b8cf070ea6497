"""--report-to for fine-tuning: each seed's evaluations go to a W&B run of its own (offline here)."""

from __future__ import annotations

import pytest

from .test_stage import run_cli


def test_report_to_wandb_writes_an_offline_run_per_seed(tiny_model, releases, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    out = tmp_path / "zs"
    assert run_cli("--model", tiny_model, "--data", releases, "--out", out, "--max-train-examples", 20,
                   "--languages", "en,fr", "--report-to", "wandb", "--seeds", 1, 2) == 0
    wandb.teardown()  # W&B's service writes a run's file after finish() returns; at the latest on exit
    histories = [path.read_bytes() for path in tmp_path.glob("wandb/offline-run-*/run-*.wandb")]
    assert len(histories) == 2
    for seed in (1, 2):
        [history] = [history for history in histories if f"zs/zero-shot/seed-{seed}".encode() in history]  # by name
        for key in ("train_loss", "dev_accuracy", "dev_accuracy_en", "eval_every"):  # records and config
            assert key.encode() in history
