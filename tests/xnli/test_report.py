"""Accuracies, their intervals, seed statistics, published rows and the chart, from hand-made
predictions."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from mdeberta.corpora.languages import XNLI_LANGUAGES
from mdeberta.manifest import write_json_atomic
from mdeberta.settings import output_settings
from mdeberta.xnli.report import (COLUMNS, PUBLISHED, ReportError, _plot_setting, prediction_path, run_info_path,
                                  write_predictions, write_report)
from mdeberta.xnli.settings import XnliSettings
from mdeberta.xnli.train import accuracy


def fake_run(run_dir, setting, seed, correct, data="facebook/xnli", languages=XNLI_LANGUAGES, pairs=4, **settings):
    """``pairs`` test and dev pairs per language; ``correct(lang)`` of them predicted right;
    ``settings`` as given to XnliSettings."""
    trained_with = output_settings(XnliSettings(setting=setting, seeds=[seed], languages=list(languages), **settings))
    info = {"model": "ours", "setting": setting, "seed": seed, "best_step": 10, "best_score": 0.5, "steps": 20,
            "train_pairs": 100, "elapsed_s": 1.0, "data": data, "settings": trained_with}
    path = run_info_path(run_dir, setting, seed)
    for split in ("dev", "test"):
        for lang in languages:
            labels = [i % 3 for i in range(pairs)]
            right = correct(lang)
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
    assert list(test.columns[:len(COLUMNS)]) == [*XNLI_LANGUAGES, "avg"]
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
    assert len(csv) == len(tables["test"]) and {"en", "ur", "avg", "interval", "en_ci95_low", "avg_ci95_high"} <= \
        set(csv.columns)
    blank = "std,ours,translate-train-all,std" + "," * (len(COLUMNS) + 1 + 2 * len(COLUMNS)) + "\n"  # no spread
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
    assert [c for c in COLUMNS if c in test.columns] == ["en", "fr", "de", "avg"]  # no other language
    assert published.avg == pytest.approx((88.2 + 82.6 + 82.7) / 3)
    ours = test.loc[("mean", "ours", "zero-shot", "mean")]
    assert ours.avg == pytest.approx(200 / 3)
    delta = test.loc[("delta", "ours - mDeBERTaV3 base", "zero-shot", "mean - published")]
    assert delta.avg == pytest.approx(ours.avg - published.avg)


def test_chart_axis_legend_title_and_error_bars(tmp_path):
    """Our bars carry their 95% interval as error bars, the published ones none; the y-axis starts
    just below the lowest bar or error bar end, the legend sits right of the bars and names the
    interval, and the title carries the average difference to each published row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    # 300 of 400 right: 75, Wilson interval [70.53, 78.99]
    fake_run(tmp_path / "a", "zero-shot", 1, lambda lang: 300, languages=["en", "fr", "de"], pairs=400)
    test = write_report([tmp_path / "a"], tmp_path / "out")["test"]
    assert (tmp_path / "out" / "xnli.png").read_bytes().startswith(b"\x89PNG")
    fig, ax = plt.subplots()
    _plot_setting(ax, "zero-shot", test, [c for c in COLUMNS if c in test.columns])
    ours, *published = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(published) == 2 and all(bars.errorbar is None for bars in published)
    segments = ours.errorbar.lines[2][0].get_segments()
    assert len(segments) == 4  # en, fr, de, avg
    assert [segment[0][1] for segment in segments[:3]] == pytest.approx([70.53] * 3, abs=1e-2)
    assert [segment[1][1] for segment in segments[:3]] == pytest.approx([78.99] * 3, abs=1e-2)
    bottom, top = ax.get_ylim()
    assert 65 <= bottom < 70.53 and 88.2 < top <= 100  # the lowest end is ours (70.53), the highest 88.2
    legend = ax.get_legend()
    assert legend.get_texts()[0].get_text() == "ours (ours, mean; 95% interval: Wilson, 1 seed)"
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


def test_intervals_of_runs_means_and_deltas(tmp_path):
    """Wilson's for a run (and for a single seed's mean), t over seeds for a mean, and a delta's
    interval moved by the published figure, in the tables, results.json and results.md."""
    # one seed, 40 of 50 right in en, fr and de: Wilson [66.96, 88.76]; avg on 150 pairs [72.89, 85.62]
    fake_run(tmp_path / "a", "translate-train-all", 1, lambda lang: 40, languages=["en", "fr", "de"], pairs=50)
    # three seeds with en 6, 7, 8 of 10 right: mean 70, std 10, 70 +- 4.303 * 10 / sqrt(3); fr and de all right
    for seed, right in ((1, 6), (2, 7), (3, 8)):
        fake_run(tmp_path / "b", "zero-shot", seed, lambda lang, right=right: right if lang == "en" else 10,
                 languages=["en", "fr", "de"], pairs=10)
    out = tmp_path / "out"
    write_report([tmp_path / "a", tmp_path / "b"], out)
    results = {(r["row"], r["model"], r["setting"], r["seed"]): r for r in json.loads((out / "results.json").read_text())["test"]}

    run = results["run", "ours", "translate-train-all", "1"]
    assert run["ci95"]["en"] == pytest.approx([66.96, 88.76], abs=1e-2)
    assert run["ci95"]["avg"] == pytest.approx([72.89, 85.62], abs=1e-2)
    assert run["interval"] == "Wilson" and run["correct"] == {"en": 40, "fr": 40, "de": 40}
    assert run["pairs"] == {"en": 50, "fr": 50, "de": 50}
    single = results["mean", "ours", "translate-train-all", "mean"]
    assert single["interval"] == "Wilson, 1 seed" and single["ci95"] == run["ci95"]
    mean = results["mean", "ours", "zero-shot", "mean"]
    assert mean["interval"] == "t, 3 seeds" and mean["en"] == 70
    assert mean["ci95"]["en"] == pytest.approx([45.1566, 94.8434], abs=1e-4)
    assert mean["ci95"]["fr"] == [100, 100]  # every seed right: no spread
    assert set(mean["ci95"]) == {"en", "fr", "de", "avg"}
    assert "correct" not in mean and results["std", "ours", "zero-shot", "std"]["ci95"] is None
    assert results["published", "XLM-R base", "zero-shot", "published"]["ci95"] is None

    # mDeBERTaV3 base, translate-train-all, en 88.9: 80 - 88.9 in [66.96 - 88.9, 88.76 - 88.9], below zero
    delta = results["delta", "ours - mDeBERTaV3 base", "translate-train-all", "mean - published"]
    assert delta["en"] == pytest.approx(-8.9) and delta["ci95"]["en"] == pytest.approx([-21.94, -0.14], abs=1e-2)
    assert delta["significant"]["en"] and delta["interval"] == "Wilson, 1 seed"
    xlmr = results["delta", "ours - XLM-R base", "translate-train-all", "mean - published"]  # en 85.4
    assert xlmr["ci95"]["en"] == pytest.approx([-18.44, 3.36], abs=1e-2) and not xlmr["significant"]["en"]
    zero_shot = results["delta", "ours - mDeBERTaV3 base", "zero-shot", "mean - published"]  # en 88.2, fr 82.6
    assert zero_shot["ci95"]["en"] == pytest.approx([45.1566 - 88.2, 94.8434 - 88.2], abs=1e-4)
    # avg: the seeds' 86.67, 90, 93.33 give 90 +- 4.303 * 3.3333 / sqrt(3) = 90 +- 8.2811; published 84.5
    assert mean["ci95"]["avg"] == pytest.approx([81.7189, 98.2811], abs=1e-4)
    assert zero_shot["ci95"]["avg"] == pytest.approx([81.7189 - 84.5, 98.2811 - 84.5], abs=1e-4)
    assert zero_shot["significant"] == {"en": False, "fr": True, "de": True, "avg": False}

    markdown = (out / "results.md").read_text()
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in markdown.splitlines() if line.startswith("| ")]
    cells = {tuple(row[:4]): row[4:] for row in rows}  # en, fr, de, avg, interval
    assert cells["run", "ours", "translate-train-all", "1"] == ["80.00 ±10.90"] * 3 + ["80.00 ±6.37", "Wilson"]
    assert cells["delta", "ours - mDeBERTaV3 base", "translate-train-all", "mean - published"][0] == "-8.90* ±10.90"
    assert cells["delta", "ours - XLM-R base", "translate-train-all", "mean - published"][0] == "-5.40 ±10.90"
    assert cells["mean", "ours", "zero-shot", "mean"][0] == "70.00 ±24.84"
    assert cells["delta", "ours - mDeBERTaV3 base", "zero-shot", "mean - published"][:2] == ["-18.20 ±24.84",
                                                                                             "17.40* ±0.00"]
    assert cells["std", "ours", "translate-train-all", "std"] == [""] * 5
    assert "Wilson score interval" in markdown and "`*`: a delta whose 95% interval excludes zero." in markdown
    assert "published figures come without an uncertainty" in markdown


def test_a_predictions_file_without_pairs_is_refused(tmp_path):
    fake_run(tmp_path / "a", "zero-shot", 1, lambda lang: 4, languages=["en"])
    path = prediction_path(tmp_path / "a", "zero-shot", 1, "test", "en")
    path.write_text("pair,label,prediction\n")
    with pytest.raises(ReportError, match=f"{path}: no pairs"):
        write_report([tmp_path / "a"], tmp_path / "out")
