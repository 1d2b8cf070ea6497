"""The per-language report, rebuilt from saved predictions.

A run folder keeps ``predictions/<setting>/seed-<s>/{dev,test}/<lang>.csv`` (gold label and
prediction per pair) and ``run.json`` beside them; accuracies, means over seeds and the
comparison with the published rows are all computed here from those files, so reports of
several runs (settings, seeds, models) can be merged without rerunning anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..corpora.languages import XNLI_LANGUAGES
from ..errors import UserError
from ..manifest import write_json_atomic
from ..storage import write_text_atomic

PUBLISHED = Path(__file__).resolve().parents[2] / "eval" / "xnli_published.csv"
COMPARED = ("mDeBERTaV3 base", "XLM-R base")
PREDICTIONS = "predictions"
COLUMNS = [*XNLI_LANGUAGES, "avg"]
KEYS = ["row", "model", "setting", "seed"]


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
    """One record per (setting, seed, split, language) with its accuracy in percent."""
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
            records.append({"run_dir": str(run_dir), "model": info["model"], "setting": info["setting"],
                            "seed": info["seed"], "training": _training(info),
                            "split": path.parent.name, "lang": path.stem,
                            "accuracy": 100 * (table.label == table.prediction).mean()})
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


def _wide(records: pd.DataFrame) -> pd.DataFrame:
    """Languages as columns; ``avg`` is the unweighted mean of the languages present."""
    table = records.pivot_table(index=["model", "setting", "seed"], columns="lang", values="accuracy")
    table = table.reindex(columns=[lang for lang in XNLI_LANGUAGES if lang in table.columns])
    table["avg"] = table.mean(axis=1)
    return table.reset_index()


def _with_summaries(runs: pd.DataFrame) -> pd.DataFrame:
    """Each seed's row, then the mean and (sample) standard deviation over seeds: blank for a
    single seed, whose spread is unknown rather than zero."""
    parts = []
    for (model, setting), group in runs.groupby(["model", "setting"], sort=False):
        values = group.drop(columns=["model", "setting", "seed"])
        parts.append(group.assign(row="run", seed=group.seed.astype(str)))
        parts.append(pd.DataFrame([{"row": "mean", "model": model, "setting": setting, "seed": "mean",
                                    **values.mean().to_dict()}]))
        parts.append(pd.DataFrame([{"row": "std", "model": model, "setting": setting, "seed": "std",
                                    **values.std(ddof=1).to_dict()}]))
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
    so both sides average the same languages."""
    rows = []
    for _, ours in means.iterrows():
        for _, theirs in published[published.setting == ours.setting].iterrows():
            differences = {lang: ours[lang] - theirs[lang] for lang in XNLI_LANGUAGES
                           if pd.notna(ours.get(lang)) and pd.notna(theirs.get(lang))}
            rows.append({"row": "delta", "model": f"{ours.model} - {theirs.model}", "setting": ours.setting,
                         "seed": "mean - published", **differences,
                         "avg": sum(differences.values()) / len(differences)})
    return pd.DataFrame(rows)


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
        tables[split] = ours[KEYS + [c for c in COLUMNS if c in ours.columns]]
    return tables


def _markdown(tables: dict[str, pd.DataFrame], runs: list[dict]) -> str:
    lines = ["# XNLI accuracy (%)", "",
             "Rows: one per setting x seed, then the mean and standard deviation over seeds; on test, the "
             "published rows of the same setting and our mean minus each. `avg` is the unweighted mean of "
             "the languages shown in its row (for the published rows, over the languages our runs cover, "
             "so it may differ from the paper's 15-language figure by rounding). A blank standard "
             "deviation: a single seed.", ""]
    for split, table in tables.items():
        blanked = table.astype(object).where(table.notna(), None)  # tabulate leaves None blank, prints NaN
        lines += [f"## {split}", "", blanked.to_markdown(index=False, floatfmt=".2f", missingval=""), ""]
    lines += ["## Runs", "", pd.DataFrame(runs).to_markdown(index=False, floatfmt="g"), ""]
    return "\n".join(lines)


def plot(test: pd.DataFrame, path: Path) -> None:
    """One panel per setting: grouped bars per language, our mean (with the seed spread) beside
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
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
        errors = _seed_spread(rows, row, columns)
        label = f"{row.model} (ours, mean)" if row.row == "mean" else f"{row.model} (published)"
        positions = [x + (i - (len(shown) - 1) / 2) * width for x in range(len(columns))]
        ax.bar(positions, values, width, yerr=errors, capsize=2, label=label,
               hatch=None if row.row == "mean" else "..", alpha=1.0 if row.row == "mean" else 0.8)
        spread = 0.0 if errors is None else errors
        ends += [*(values - spread), *(values + spread)]
    low, high = pd.Series(ends).min(), pd.Series(ends).max()
    ax.set_ylim(max(0.0, 5 * ((low - 3) // 5)), min(100.0, high + 0.06 * (high - low) + 1))
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(_plot_title(setting, rows, len(columns) - 1), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _seed_spread(rows: pd.DataFrame, row: pd.Series, columns: list[str]):
    """Our std over seeds as error bars; none for a published row or a single seed."""
    std = rows[(rows.row == "std") & (rows.model == row.model)]
    if row.row != "mean" or std.empty or std[columns].isna().all(axis=None):
        return None
    return std[columns].to_numpy(dtype=float)[0]


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
    tables["test"].to_csv(out / "results.csv", index=False, float_format="%.2f")
    write_json_atomic(out / "results.json", {split: json.loads(t.to_json(orient="records", double_precision=4))
                                             for split, t in tables.items()} | {"runs": runs})
    (out / "results.md").write_text(_markdown(tables, runs), encoding="utf-8")
    plot(tables["test"], out / "xnli.png")
    return tables


def _run_summary(info_path: Path) -> dict:
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return {key: info[key] for key in ("model", "setting", "seed", "best_step", "best_score", "steps",
                                       "train_pairs", "elapsed_s")}
