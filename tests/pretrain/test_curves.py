"""Pictures and trackers of a pretraining run: curves.png with its panels, redrawn at each validation;
`mdeberta pretrain plot` over several runs and its one-line refusal; --report-to (W&B offline,
bad names, a tracker not installed)."""

from __future__ import annotations

import json

import pytest

from mdeberta import trackers
from mdeberta.cli import main
from mdeberta.pretrain import metrics, plot
from mdeberta.pretrain.settings import PretrainSettings
from mdeberta.settings import SettingsError

from .test_train import records, train

PNG = b"\x89PNG"


def lines_by_label(ax) -> dict[str, int]:
    """Each line of a panel: its legend label and number of points."""
    return {line.get_label(): len(line.get_xdata()) for line in ax.get_lines()}


def test_a_run_draws_its_curves_at_each_validation_and_at_the_end(tokens, tokenizer, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(metrics, "write_curves", lambda run: drawn.append(run) or plot.write_curves(run))
    assert train(tokens, tokenizer, tmp_path / "validated-at-3", eval_every=3) == 0
    assert len(drawn) == 2  # the validation at step 3, then the end for step 4's record
    drawn.clear()
    assert train(tokens, tokenizer, tmp_path, eval_every=2) == 0
    assert len(drawn) == 2  # validations at steps 2 and 4; the end adds no record to draw
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)
    assert not list(tmp_path.glob("*.tmp"))

    figure = plot.draw({"run": plot.read_metrics(tmp_path)}, "title")
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    assert list(panels) == ["generator MLM loss", "generator MLM accuracy", "RTD loss", "RTD accuracy", "RTD AUC",
                            "loss (L_MLM + λ L_RTD)", "learning rate", "tokens/s (training time)"]
    for title in ("generator MLM loss", "generator MLM accuracy", "RTD loss", "RTD accuracy", "RTD AUC"):
        assert lines_by_label(panels[title]) == {"train": 4, "validation": 2}  # steps 1-4; validated at 2 and 4
    for title in ("learning rate", "tokens/s (training time)"):
        assert lines_by_label(panels[title]) == {"train": 4}  # never validated


def test_the_plot_command_overlays_runs_labelled_by_folder_and_sharing(tokens, tokenizer, tmp_path, capsys):
    for name, sharing in (("first", "gdes"), ("es-run", "es")):
        folder = tmp_path / name
        assert train(tokens, tokenizer, folder, sharing=sharing, eval_every=2) == 0
        (folder / "settings.json").write_text(json.dumps({"sharing": sharing}))  # as the stage writes it
    runs = plot.labelled([tmp_path / "first", tmp_path / "es-run"])
    assert list(runs) == ["first (gdes)", "es-run"]  # the second name says its sharing already

    out = tmp_path / "charts" / "both.png"
    assert main(["pretrain", "plot", str(tmp_path / "first"), str(tmp_path / "es-run"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG) and str(out) in capsys.readouterr().out
    figure = plot.draw({label: plot.read_metrics(folder) for label, folder in runs.items()}, "title")
    assert lines_by_label(figure.axes[0]) == {"first (gdes) train": 4, "first (gdes) validation": 2,
                                              "es-run train": 4, "es-run validation": 2}


def test_a_run_without_metrics_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    for run, message in (("run", "run: no metrics.jsonl; give the --out folder of `mdeberta pretrain run`"),
                         ("empty", "metrics.jsonl: no records yet")):
        assert main(["pretrain", "plot", str(tmp_path / run), "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_report_to_wandb_writes_an_offline_run_with_the_records(tokens, tokenizer, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    out = tmp_path / "tiny-run"
    assert train(tokens, tokenizer, out, eval_every=2, report_to=["wandb"]) == 0
    wandb.teardown()  # W&B's service writes the run's file after finish() returns; at the latest on exit
    [history] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    logged = history.read_bytes()
    for key in ("rtd_auc", "valid_rtd_auc", "tokens_per_s", "tiny-run", "max_steps"):  # records, name, config
        assert key.encode() in logged
    assert records(out)[-1]["step"] == 4  # metrics.jsonl as ever


def test_report_to_names_are_checked_before_a_run(monkeypatch):
    with pytest.raises(SettingsError, match="report_to: comet is not one of tensorboard, wandb, none"):
        PretrainSettings(report_to=["comet"])
    with pytest.raises(SettingsError, match="none turns every tracker off; give it alone"):
        PretrainSettings(report_to=["none", "wandb"])
    assert trackers.chosen_trackers(["none"]) == []
    monkeypatch.setattr(trackers, "_installed", lambda name: name != "wandb")
    with pytest.raises(SettingsError, match="the wandb package is not installed; pip install wandb"):
        PretrainSettings(report_to=["wandb"])
    assert trackers.chosen_trackers([]) == ["tensorboard"]  # the default: tensorboard when installed


def test_report_to_from_the_command_line_and_a_recipe(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[pretrain]\nreport_to = "tensorbord"\n')
    assert main(["pretrain", "run", "--recipe", str(recipe), "--corpus", str(tmp_path), "--tokenizer",
                 str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "report_to: tensorbord is not one of" in capsys.readouterr().err
    assert main(["pretrain", "run", "--report-to", "none,wandb", "--corpus", str(tmp_path), "--tokenizer",
                 str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "give it alone" in capsys.readouterr().err
