"""The per-language report, rebuilt from saved predictions.

A run folder keeps ``predictions/<setting>/seed-<s>/{dev,test}/<lang>.csv`` (gold label and
prediction per pair) and ``run.json`` beside them; accuracies, their 95% intervals, means over
seeds and the comparison with the published rows are all computed here from those files, so
reports of several runs (settings, seeds, models) can be merged without rerunning anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..corpora import XNLI_LANGUAGES
from ..errors import UserError
from ..manifest import write_json_atomic
from ..storage import write_figure, write_text_atomic
from .intervals import mean_interval, wilson

PUBLISHED = Path(__file__).resolve().parents[2] / "eval" / "xnli_published.csv"
COMPARED = ("mDeBERTaV3 base", "XLM-R base")
PREDICTIONS = "predictions"
COLUMNS = [*XNLI_LANGUAGES, "avg"]
KEYS = ["row", "model", "setting", "seed"]
COUNTS = ("correct", "pairs")


class ReportError(UserError):
    pass


def prediction_path(run_dir: Path, setting: str, seed: int, split: str, lang: str) -> Path:
    return Path(run_dir) / PREDICTIONS / setting / f"seed-{seed}" / split / f"{lang}.csv"


def run_info_path(run_dir: Path, setting: str, seed: int) -> Path:
    return Path(run_dir) / PREDICTIONS / setting / f"seed-{seed}" / "run.json"


def write_predictions(run_dir: Path, setting: str, seed: int, split: str, lang: str, labels: list[int],
                      predictions: list[int]) -> None:
    path = prediction_path(run_dir, setting, seed, split, lang)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, pd.DataFrame({"label": labels, "prediction": predictions}).rename_axis("pair").to_csv())


def _run_records(run_dir: Path) -> list[dict]:
    """One record per (setting, seed, split, language): pairs evaluated, how many were predicted
    right, and the accuracy in percent."""
    root = Path(run_dir) / PREDICTIONS
    infos = sorted(root.glob("*/seed-*/run.json"))
    if not infos:
        raise ReportError(f"{run_dir}: no {PREDICTIONS}/<setting>/seed-<s>/run.json; is it the --out folder "
                          "of a finished `mdeberta xnli run`?")
    records = []
    for info_path in infos:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        for path in sorted(info_path.parent.glob("*/*.csv")):
            table = pd.read_csv(path)
            if table.empty:
                raise ReportError(f"{path}: no pairs; rerun that seed (`mdeberta xnli run --force`)")
            correct = int((table.label == table.prediction).sum())
            records.append({"run_dir": str(run_dir), "model": info["model"], "setting": info["setting"],
                            "seed": info["seed"], "training": _training(info),
                            "split": path.parent.name, "lang": path.stem,
                            "correct": correct, "pairs": len(table), "accuracy": 100 * correct / len(table)})
    return records


def _training(info: dict) -> str:
    """Everything that decides a seed's accuracies apart from the seed (data and settings), as a
    canonical JSON string to compare runs by."""
    settings = {key: value for key, value in info["settings"].items() if key != "seeds"}
    return json.dumps({"data": info["data"], **settings}, sort_keys=True)


def _differences(training: str, other: str) -> str:
    first, second = json.loads(training), json.loads(other)
    return ", ".join(f"{key} {first.get(key)!r} vs {second.get(key)!r}" for key in sorted(first.keys() | second.keys())
                     if first.get(key) != second.get(key))


def _refuse_mixed_training(records: pd.DataFrame) -> None:
    """Seeds of one model and setting are averaged into one mean: seeds trained on other data or
    with other settings would make that mean meaningless."""
    runs = records.drop_duplicates(["run_dir", "model", "setting", "seed"])
    for (model, setting), group in runs.groupby(["model", "setting"], sort=False):
        kinds = group.drop_duplicates("training")
        if len(kinds) > 1:
            first, other = kinds.iloc[0], kinds.iloc[1]
            raise ReportError(f"{first.run_dir} and {other.run_dir} hold {setting} runs of {model} trained "
                              f"differently ({_differences(first.training, other.training)}); report them separately")


def _refuse_duplicates(records: pd.DataFrame) -> None:
    """The same model, setting and seed in two run folders would be averaged into one row."""
    runs = records.drop_duplicates(["run_dir", "model", "setting", "seed"])
    twice = runs[runs.duplicated(["model", "setting", "seed"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        folders = twice[(twice.model == first.model) & (twice.setting == first.setting) & (twice.seed == first.seed)]
        raise ReportError(f"{' and '.join(folders.run_dir)} both hold {first.setting} seed {first.seed} of "
                          f"{first.model}; report them separately")


def _low(column: str) -> str:
    return f"{column}_ci95_low"


def _high(column: str) -> str:
    return f"{column}_ci95_high"


def _count(lang: str, what: str) -> str:
    return f"{lang}_{what}"


def _shown(table: pd.DataFrame) -> list[str]:
    return [c for c in COLUMNS if c in table.columns]


def _wide(records: pd.DataFrame) -> pd.DataFrame:
    """One row per run, languages as columns: accuracy, its Wilson interval and the counts behind
    it. ``avg`` is the unweighted mean of the languages present; the mean of L accuracies varies
    as one accuracy on L^2 / sum(1 / pairs) pairs (all of them when the languages have as many),
    which gives its Wilson interval."""
    table = records.pivot_table(index=["model", "setting", "seed"], columns="lang", values=["accuracy", *COUNTS])
    languages = [lang for lang in XNLI_LANGUAGES if lang in table["accuracy"].columns]
    accuracy = table["accuracy"][languages]
    accuracy = accuracy.assign(avg=accuracy.mean(axis=1))
    pairs = table["pairs"][languages]
    pairs = pairs.assign(avg=pairs.notna().sum(axis=1) ** 2 / (1 / pairs).sum(axis=1))
    low, high = wilson(accuracy / 100, pairs)
    counts = [table[what][languages].add_suffix(f"_{what}") for what in COUNTS]  # as _count names them
    wide = pd.concat([accuracy, 100 * low.rename(columns=_low), 100 * high.rename(columns=_high), *counts], axis=1)
    return wide.assign(interval="Wilson").reset_index()


def _with_summaries(runs: pd.DataFrame) -> pd.DataFrame:
    """Each seed's row, then the mean and (sample) standard deviation over seeds: blank for a
    single seed, whose spread is unknown rather than zero. The mean's 95% interval is Student's t
    over the seeds; a single seed gives none, so its mean keeps the run's Wilson interval, and
    ``interval`` says which it is."""
    columns = _shown(runs)
    parts = []
    for (model, setting), group in runs.groupby(["model", "setting"], sort=False):
        mean, std = group[columns].mean(), group[columns].std(ddof=1)
        if len(group) > 1:
            low, high = mean_interval(mean, std, len(group))
            bounds = {**low.rename(_low).to_dict(), **high.rename(_high).to_dict()}
            interval = f"t, {len(group)} seeds"
        else:
            bounds = {bound(c): group[bound(c)].iloc[0] for c in columns for bound in (_low, _high)}
            interval = "Wilson, 1 seed"
        parts.append(group.assign(row="run", seed=group.seed.astype(str)))
        parts.append(pd.DataFrame([{"row": "mean", "model": model, "setting": setting, "seed": "mean",
                                    **mean.to_dict(), **bounds, "interval": interval}]))
        parts.append(pd.DataFrame([{"row": "std", "model": model, "setting": setting, "seed": "std",
                                    **std.to_dict()}]))
    return pd.concat(parts, ignore_index=True)


def load_published(path: Path = PUBLISHED, models=COMPARED) -> pd.DataFrame:
    table = pd.read_csv(path)
    absent = [column for column in ("model", "setting", *XNLI_LANGUAGES) if column not in table.columns]
    if absent:
        raise ReportError(f"{path}: no column {', '.join(absent)}; a published-results CSV has model, setting "
                          "and one column per XNLI language (see eval/xnli_published.csv)")
    missing = set(models) - set(table.model)
    if missing:
        raise ReportError(f"{path}: no published rows for {', '.join(sorted(missing))} "
                          f"(has {', '.join(sorted(set(table.model)))})")
    rows = table.set_index("model").loc[list(models)].reset_index()  # in the order asked for
    return rows.assign(row="published", seed="published")


def _published_over_our_languages(published: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """The published rows of each setting we ran, cut to the languages our rows of that setting
    cover, with ``avg`` the mean over those: an average over other languages than ours (the
    paper's is over all 15) would not compare with our ``avg``."""
    parts = []
    for setting, rows in ours.groupby("setting", sort=False):
        languages = [lang for lang in XNLI_LANGUAGES if lang in rows.columns and rows[lang].notna().any()]
        theirs = published[published.setting == setting]
        parts.append(theirs[["row", "model", "setting", "seed", *languages]].assign(avg=theirs[languages].mean(axis=1)))
    return pd.concat(parts, ignore_index=True)


def _deltas(means: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Our mean minus each published row, per language; ``avg`` is the mean of those differences,
    so both sides average the same languages. The published figures come without an uncertainty,
    so a delta's interval is our mean's, moved by the published figure."""
    rows = []
    for _, ours in means.iterrows():
        for _, theirs in published[published.setting == ours.setting].iterrows():
            differences = {lang: ours[lang] - theirs[lang] for lang in XNLI_LANGUAGES
                           if pd.notna(ours.get(lang)) and pd.notna(theirs.get(lang))}
            differences["avg"] = sum(differences.values()) / len(differences)
            bounds = {bound(c): ours[bound(c)] - ours[c] + difference
                      for c, difference in differences.items() for bound in (_low, _high)}
            rows.append({"row": "delta", "model": f"{ours.model} - {theirs.model}", "setting": ours.setting,
                         "seed": "mean - published", **differences, **bounds, "interval": ours.interval})
    return pd.DataFrame(rows)


def _significant(row: pd.Series, column: str) -> bool:
    """Whether a delta's 95% interval excludes zero."""
    return bool(row[_low(column)] > 0 or row[_high(column)] < 0)


def build_tables(run_dirs: list[Path], published: pd.DataFrame) -> dict[str, pd.DataFrame]:
    records = pd.DataFrame([r for run_dir in run_dirs for r in _run_records(run_dir)])
    _refuse_duplicates(records)
    _refuse_mixed_training(records)
    tables = {}
    for split in ("test", "dev"):
        part = records[records.split == split]
        if part.empty:
            continue
        ours = _with_summaries(_wide(part))
        if split == "test":
            shown = _published_over_our_languages(published, ours)
            ours = pd.concat([ours, shown, _deltas(ours[ours.row == "mean"], shown)], ignore_index=True)
        tables[split] = ours[_reported(ours) + _counted(ours)]
    return tables


def _reported(table: pd.DataFrame) -> list[str]:
    """The columns of results.csv: accuracies, then the kind of interval and its bounds."""
    columns = _shown(table)
    return KEYS + columns + ["interval"] + [bound(c) for c in columns for bound in (_low, _high)]


def _counted(table: pd.DataFrame) -> list[str]:
    return [_count(lang, what) for what in COUNTS for lang in _shown(table) if lang != "avg"]


def _rounded(value) -> float | None:
    return None if pd.isna(value) else round(float(value), 4)


def _json_records(table: pd.DataFrame) -> list[dict]:
    """The rows of results.csv with each row's intervals as ``ci95`` ({column: [low, high]}, null
    for a row without), per delta whether that interval excludes zero (``significant``), and per
    run the counts behind its accuracies (``correct`` of ``pairs``)."""
    columns = _shown(table)
    records = []
    for _, row in table.iterrows():
        bounds = {c: [_rounded(row[_low(c)]), _rounded(row[_high(c)])] for c in columns if pd.notna(row[_low(c)])}
        record = {**{key: row[key] for key in KEYS}, **{c: _rounded(row[c]) for c in columns},
                  "interval": row.interval if pd.notna(row.interval) else None, "ci95": bounds or None}
        if row.row == "delta":
            record["significant"] = {c: _significant(row, c) for c in bounds}
        if row.row == "run":
            record |= {what: {lang: int(row[_count(lang, what)]) for lang in columns
                              if lang != "avg" and pd.notna(row[_count(lang, what)])} for what in COUNTS}
        records.append(record)
    return records


def markdown_table(table: pd.DataFrame) -> str:
    """Each figure with +- half its 95% interval's width, deltas whose interval excludes zero
    marked *, and the kind of interval in the last column."""
    columns = _shown(table)
    cells = table[KEYS].copy()
    for column in columns:
        cells[column] = [_cell(row, column) for _, row in table.iterrows()]
    cells["interval"] = table.interval.fillna("")
    return cells.to_markdown(index=False, disable_numparse=True,
                             colalign=["left"] * len(KEYS) + ["right"] * len(columns) + ["left"])


def _cell(row: pd.Series, column: str) -> str:
    if pd.isna(row[column]):
        return ""
    figure = f"{row[column]:.2f}"
    if pd.isna(row[_low(column)]):
        return figure
    mark = "*" if row.row == "delta" and _significant(row, column) else ""
    return f"{figure}{mark} ±{(row[_high(column)] - row[_low(column)]) / 2:.2f}"


def _markdown(tables: dict[str, pd.DataFrame], runs: list[dict]) -> str:
    lines = ["# XNLI accuracy (%)", "",
             "Rows: one per setting x seed, then the mean and standard deviation over seeds; on test, the "
             "published rows of the same setting and our mean minus each. `avg` is the unweighted mean of "
             "the languages shown in its row (for the published rows, over the languages our runs cover, "
             "so it may differ from the paper's 15-language figure by rounding). A blank standard "
             "deviation: a single seed.", "",
             "`±` is half the width of the figure's 95% confidence interval (the bounds are `ci95` in "
             "results.json). `interval` names it: `Wilson`, the Wilson score interval of the run's "
             "pairs (for `avg`, of the pairs of all its languages); `t, k seeds`, Student's t interval of "
             "the mean over k seeds (k - 1 degrees of freedom), which measures how seeds vary on these "
             "test pairs; `Wilson, 1 seed`, a single seed's Wilson interval in place of one over seeds. "
             "The published figures come without an uncertainty: a delta's interval is our mean's, moved "
             "by the published figure.", "",
             "`*`: a delta whose 95% interval excludes zero.", ""]
    for split, table in tables.items():
        lines += [f"## {split}", "", markdown_table(table), ""]
    lines += ["## Runs", "", pd.DataFrame(runs).to_markdown(index=False, floatfmt="g"), ""]
    return "\n".join(lines)


def plot(test: pd.DataFrame, path: Path) -> None:
    """One panel per setting: grouped bars per language, our mean (with its 95% interval) beside
    the published rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(test.setting))
    columns = [c for c in COLUMNS if c in test.columns]
    fig, axes = plt.subplots(len(settings), 1, figsize=(max(11, 0.8 * len(columns) + 5), 4.4 * len(settings)),
                             squeeze=False, layout="constrained")
    for ax, setting in zip(axes[:, 0], settings):
        _plot_setting(ax, setting, test[test.setting == setting], columns)
    write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _plot_setting(ax, setting: str, rows: pd.DataFrame, columns: list[str]) -> None:
    """Accuracies sit within a few points of each other: from 0 their bars would look alike, so
    the y-axis starts just below the lowest bar. The legend sits outside, right of the bars; the
    title gives our average difference to each published row."""
    shown = rows[rows.row.isin(["mean", "published"])]
    columns = [c for c in columns if shown[c].notna().any()]
    width = 0.8 / len(shown)
    ends = []
    for i, (_, row) in enumerate(shown.iterrows()):
        values = row[columns].to_numpy(dtype=float)
        errors = _interval_errors(row, columns)
        label = (f"{row.model} (ours, mean; 95% interval: {row.interval})" if row.row == "mean"
                 else f"{row.model} (published)")
        positions = [x + (i - (len(shown) - 1) / 2) * width for x in range(len(columns))]
        ax.bar(positions, values, width, yerr=errors, capsize=2, label=label,
               hatch=None if row.row == "mean" else "..", alpha=1.0 if row.row == "mean" else 0.8)
        below, above = (0.0, 0.0) if errors is None else errors
        ends += [*(values - below), *(values + above)]
    low, high = pd.Series(ends).min(), pd.Series(ends).max()
    ax.set_ylim(max(0.0, 5 * ((low - 3) // 5)), min(100.0, high + 0.06 * (high - low) + 1))
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(_plot_title(setting, rows, len(columns) - 1), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _interval_errors(row: pd.Series, columns: list[str]):
    """Our mean's 95% interval as error bars (below, above: Wilson's is not symmetric); none for a
    published row, which has no published uncertainty."""
    if row.row != "mean":
        return None
    values = row[columns].to_numpy(dtype=float)
    low, high = (row[[bound(c) for c in columns]].to_numpy(dtype=float) for bound in (_low, _high))
    return [values - low, high - values]


def _plot_title(setting: str, rows: pd.DataFrame, languages: int) -> str:
    deltas = rows[rows.row == "delta"]
    differences = ", ".join(f"{row.model.replace(' - ', ' minus ')} {row.avg:+.1f} points"
                            for _, row in deltas.iterrows())
    return f"XNLI {setting}, test accuracy\naverage over {languages} languages: {differences}"


def write_report(run_dirs: list[Path], out: Path, published_path: Path = PUBLISHED,
                 compared=COMPARED) -> dict[str, pd.DataFrame]:
    """``results.csv`` (test), ``results.json`` (test, dev, runs), ``results.md`` and ``xnli.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables([Path(d) for d in run_dirs], load_published(published_path, compared))
    if "test" not in tables:
        raise ReportError(f"{', '.join(map(str, run_dirs))}: no test predictions found")
    runs = [_run_summary(p) for d in run_dirs for p in sorted((Path(d) / PREDICTIONS).glob("*/seed-*/run.json"))]
    write_text_atomic(out / "results.csv",
                      tables["test"][_reported(tables["test"])].to_csv(index=False, float_format="%.2f"))
    write_json_atomic(out / "results.json", {split: _json_records(t) for split, t in tables.items()} | {"runs": runs})
    write_text_atomic(out / "results.md", _markdown(tables, runs))
    plot(tables["test"], out / "xnli.png")
    return tables


def _run_summary(info_path: Path) -> dict:
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return {key: info[key] for key in ("model", "setting", "seed", "best_step", "best_score", "steps",
                                       "train_pairs", "elapsed_s")}
