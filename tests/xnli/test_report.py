"""Accuracies, seed statistics, published rows and the chart, from hand-made predictions."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from mdeberta.corpora.languages import XNLI_LANGUAGES
from mdeberta.manifest import write_json_atomic
from mdeberta.recipe import output_settings
from mdeberta.xnli.report import (COLUMNS, PUBLISHED, ReportError, _plot_setting, run_info_path, write_predictions,
                                  write_report)
from mdeberta.xnli.settings import XnliSettings
from mdeberta.xnli.train import accuracy


def fake_run(run_dir, setting, seed, correct_of_4, data="facebook/xnli", languages=XNLI_LANGUAGES, **settings):
    """Four test and dev pairs per language; ``correct_of_4(lang)`` of them predicted right;
    ``settings`` as given to XnliSettings."""
    trained_with = output_settings(XnliSettings(setting=setting, seeds=[seed], languages=list(languages), **settings))
    info = {"model": "ours", "setting": setting, "seed": seed, "best_step": 10, "best_score": 0.5, "steps": 20,
            "train_pairs": 100, "elapsed_s": 1.0, "data": data, "settings": trained_with}
    path = run_info_path(run_dir, setting, seed)
    for split in ("dev", "test"):
        for lang in languages:
            labels = [0, 1, 2, 0]
            right = correct_of_4(lang)
            write_predictions(run_dir, setting, seed, split, lang, labels,
                              labels[:right] + [(y + 1) % 3 for y in labels[right:]])
    write_json_atomic(path, info)


def test_accuracy_by_hand():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert accuracy([1], [0]) == 0.0
    with pytest.raises(ValueError):
        accuracy([], [])


def test_published_rows_average():
    table = pd.read_csv(PUBLISHED)
    assert len(table) == 8 and list(table.columns[2:-1]) == list(XNLI_LANGUAGES)
    for model in ("mDeBERTaV3 base", "XLM-R base"):
        rows = table[table.model == model]
        assert (rows[list(XNLI_LANGUAGES)].mean(axis=1) - rows.avg).abs().max() < 0.06


def test_report_rows_and_merge(tmp_path):
    # en: seeds get 4/4 and 2/4 right -> 100, 50: mean 75, std 35.36; others 1/4 and 3/4 -> 25, 75
    fake_run(tmp_path / "a", "zero-shot", 1, lambda lang: 4 if lang == "en" else 1)
    fake_run(tmp_path / "b", "zero-shot", 2, lambda lang: 2 if lang == "en" else 3)
    fake_run(tmp_path / "b", "translate-train-all", 1, lambda lang: 3)
    tables = write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    test = tables["test"].set_index(["row", "model", "setting", "seed"])
    assert list(test.columns) == [*XNLI_LANGUAGES, "avg"]
    assert test.loc[("run", "ours", "zero-shot", "1"), "en"] == 100
    assert test.loc[("run", "ours", "zero-shot", "1"), "avg"] == pytest.approx((100 + 14 * 25) / 15)
    assert test.loc[("mean", "ours", "zero-shot", "mean"), "en"] == 75
    assert test.loc[("std", "ours", "zero-shot", "std"), "en"] == pytest.approx(35.3553, abs=1e-3)
    assert test.loc[("mean", "ours", "zero-shot", "mean"), "fr"] == 50
    assert test.loc[("std", "ours", "translate-train-all", "std")].isna().all()  # one seed: unknown, not 0
    assert test.loc[("published", "mDeBERTaV3 base", "zero-shot", "published"), "sw"] == 73.9
    assert test.loc[("published", "XLM-R base", "translate-train-all", "published"), "en"] == 85.4
    published = pd.read_csv(PUBLISHED).set_index(["model", "setting"])
    assert test.loc[("published", "mDeBERTaV3 base", "zero-shot", "published"), "avg"] == \
        pytest.approx(published.loc[("mDeBERTaV3 base", "zero-shot"), list(XNLI_LANGUAGES)].mean())
    assert test.loc[("delta", "ours - mDeBERTaV3 base", "zero-shot", "mean - published"), "en"] == \
        pytest.approx(75 - 88.2)
    assert test.loc[("delta", "ours - XLM-R base", "translate-train-all", "mean - published"), "ur"] == \
        pytest.approx(75 - 73.0)

    out = tmp_path / "out"
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == len(tables["test"]) and {"en", "ur", "avg"} <= set(csv.columns)
    blank = "std,ours,translate-train-all,std" + "," * len(COLUMNS) + "\n"  # one seed: no spread
    assert blank in (out / "results.csv").read_text()
    results = json.loads((out / "results.json").read_text())
    assert {"test", "dev", "runs"} <= set(results) and len(results["runs"]) == 3
    single = next(r for r in results["test"] if r["row"] == "std" and r["setting"] == "translate-train-all")
    assert single["en"] is None and single["avg"] is None
    markdown = (out / "results.md").read_text()
    assert "| mean " in markdown and "nan" not in markdown
    png = (out / "xnli.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_languages_subset_compares_the_same_languages(tmp_path):
    """A run over en, fr and de compares with the published rows' mean over en, fr and de, not
    with the paper's 15-language average."""
    fake_run(tmp_path / "a", "zero-shot", 1, lambda lang: 4 if lang == "en" else 2, languages=["en", "fr", "de"])
    test = write_report([tmp_path / "a"], tmp_path / "out")["test"].set_index(["row", "model", "setting", "seed"])
    published = test.loc[("published", "mDeBERTaV3 base", "zero-shot", "published")]
    assert published[["en", "fr", "de"]].tolist() == [88.2, 82.6, 82.7]
    assert published.drop(["en", "fr", "de", "avg"]).isna().all()
    assert published.avg == pytest.approx((88.2 + 82.6 + 82.7) / 3)
    ours = test.loc[("mean", "ours", "zero-shot", "mean")]
    assert ours.avg == pytest.approx(200 / 3)
    delta = test.loc[("delta", "ours - mDeBERTaV3 base", "zero-shot", "mean - published")]
    assert delta.avg == pytest.approx(ours.avg - published.avg) and delta.drop(["en", "fr", "de", "avg"]).isna().all()


def test_chart_axis_legend_and_title(tmp_path):
    """The y-axis starts just below the lowest bar end, the legend sits right of the bars and the
    title carries the average difference to each published row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fake_run(tmp_path / "a", "zero-shot", 1, lambda lang: 3, languages=["en", "fr", "de"])
    test = write_report([tmp_path / "a"], tmp_path / "out")["test"]
    fig, ax = plt.subplots()
    _plot_setting(ax, "zero-shot", test, [c for c in COLUMNS if c in test.columns])
    bottom, top = ax.get_ylim()
    assert 70 <= bottom < 75 and 88.2 < top <= 100  # the lowest bar is ours (75), the highest 88.2
    legend = ax.get_legend()
    fig.canvas.draw()
    assert legend.get_window_extent().x0 > ax.get_window_extent().x1
    assert "average over 3 languages: ours minus mDeBERTaV3 base -9.5 points, ours minus XLM-R base -6.4 points" \
        in ax.get_title()
    plt.close(fig)


def test_the_same_seed_in_two_folders_is_refused(tmp_path):
    fake_run(tmp_path / "a", "zero-shot", 1, lambda lang: 4)
    fake_run(tmp_path / "b", "zero-shot", 1, lambda lang: 0)
    with pytest.raises(ReportError, match="both hold zero-shot seed 1 of ours"):
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def test_seeds_trained_differently_are_not_averaged(tmp_path):
    fake_run(tmp_path / "a", "zero-shot", 1, lambda lang: 4)
    fake_run(tmp_path / "b", "zero-shot", 2, lambda lang: 0, epochs=2.0)
    folders = f"{tmp_path / 'a'} and {tmp_path / 'b'}"
    with pytest.raises(ReportError, match=re.escape(f"{folders} hold zero-shot runs of ours trained differently "
                                                    "(epochs 6.0 vs 2.0); report them separately")):
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    fake_run(tmp_path / "c", "zero-shot", 3, lambda lang: 0, data="eval/sample")
    with pytest.raises(ReportError, match=r"\(data 'facebook/xnli' vs 'eval/sample'\)"):
        write_report([tmp_path / "a", tmp_path / "c"], tmp_path / "out")
    # another setting is another mean: its settings may differ
    fake_run(tmp_path / "d", "translate-train-all", 1, lambda lang: 0, epochs=2.0)
    merged = write_report([tmp_path / "a", tmp_path / "d"], tmp_path / "out")["test"]
    assert set(merged.setting) == {"zero-shot", "translate-train-all"}


def test_report_of_a_folder_without_runs(tmp_path):
    with pytest.raises(ReportError, match="no predictions/<setting>/seed-<s>/run.json"):
        write_report([tmp_path], tmp_path / "out")
