"""XNLI readers: the Hugging Face dataset, the XNLI-1.0 release and XNLI-MT-1.0.

Every reader returns the same table (premise, hypothesis, label) with labels mapped by *name* to
0 entailment, 1 neutral, 2 contradiction: sources order their label ids differently (XTREME puts
contradiction first) and XNLI-MT spells contradiction "contradictory".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..errors import UserError

LABELS = ("entailment", "neutral", "contradiction")
LABEL_IDS = {name: i for i, name in enumerate(LABELS)} | {"contradictory": 2}
DEFAULT_DATA = "facebook/xnli"


class XnliDataError(UserError):
    """A missing file, language or split, or a label that is not an NLI label."""


def label_ids(names, where: str) -> list[int]:
    ids = []
    for row, name in enumerate(names):
        key = str(name).strip().lower()
        if key not in LABEL_IDS:
            raise XnliDataError(f"{where}, row {row + 1}: label {name!r} is not one of "
                                "entailment, neutral, contradiction (contradictory)")
        ids.append(LABEL_IDS[key])
    return ids


def _class_names(ids, names, where: str) -> list[str]:
    """A ClassLabel's ids as its own names. An id without a name (-1 is datasets' "no label")
    is refused: indexing would turn -1 silently into the last class."""
    for row, i in enumerate(ids):
        if not 0 <= i < len(names):
            raise XnliDataError(f"{where}, row {row + 1}: label id {i} is none of the dataset's classes "
                                f"({', '.join(f'{k} {n}' for k, n in enumerate(names))}); every XNLI pair needs "
                                "its gold label")
    return [names[i] for i in ids]


def _table(premise, hypothesis, labels, where: str) -> pd.DataFrame:
    return pd.DataFrame({"premise": list(premise), "hypothesis": list(hypothesis),
                         "label": label_ids(labels, where)})


def read_tsv(path: Path, columns: list[str]) -> pd.DataFrame:
    """The releases' TSVs hold unbalanced quotes inside sentences, so fields are split on tabs with
    no quoting at all. A line with another number of fields than the header stops the run naming
    that line: a stray tab would otherwise shift text into the next column unseen."""
    if not path.is_file():
        raise XnliDataError(f"expected {path}; it does not exist")
    try:
        with path.open(encoding="utf-8", newline="") as file:  # no newline translation: a lone \r is text
            lines = file.read().split("\n")
    except UnicodeDecodeError as err:
        raise XnliDataError(f"{path}: not UTF-8 text ({err})") from None
    header = lines[0].removesuffix("\r").split("\t")
    missing = [column for column in columns if column not in header]
    if missing:
        raise XnliDataError(f"{path}: not an XNLI TSV with columns {', '.join(columns)} "
                            f"(its header has no {', '.join(missing)})")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.removesuffix("\r").split("\t")
        if fields == [""]:  # the end of the last line, or a blank line: no pair
            continue
        if len(fields) != len(header):
            raise XnliDataError(f"{path}, line {number}: {len(fields)} tab-separated fields where the header has "
                                f"{len(header)}; fix or remove that line")
        rows.append(fields)
    return pd.DataFrame(rows, columns=header)[columns]


class ReleaseReader:
    """The unpacked releases: ``D/XNLI-1.0/xnli.{dev,test}.tsv`` (all languages in one file, 19
    columns) and ``D/XNLI-MT-1.0/multinli/multinli.train.{lang}.tsv`` (premise, hypo, label)."""

    def __init__(self, root: Path):
        self.root = root

    def read(self, split: str, lang: str) -> pd.DataFrame:
        if split == "train":
            path = self.root / "XNLI-MT-1.0" / "multinli" / f"multinli.train.{lang}.tsv"
            table = read_tsv(path, ["premise", "hypo", "label"])
            return _table(table.premise, table.hypo, table.label, str(path))
        path = self.root / "XNLI-1.0" / f"xnli.{split}.tsv"
        table = self._evaluation_file(path)
        rows = table[table.language == lang]
        if rows.empty:
            raise XnliDataError(f"{path} has no rows for language '{lang}' (column 'language')")
        return _table(rows.sentence1, rows.sentence2, rows.gold_label, f"{path} [{lang}]").reset_index(drop=True)

    @staticmethod
    @lru_cache(maxsize=2)
    def _evaluation_file(path: Path) -> pd.DataFrame:
        return read_tsv(path, ["language", "gold_label", "sentence1", "sentence2"])


class DatasetsReader:
    """``facebook/xnli`` (or a copy) read with ``datasets``: one config per language with splits
    train / validation / test, from the hub (or its cache) or from ``D/<lang>`` folders written by
    ``load_dataset("facebook/xnli", lang).save_to_disk(f"D/{lang}")``."""

    SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}

    def __init__(self, source: str, local: bool):
        self.source = source
        self.local = local

    def read(self, split: str, lang: str) -> pd.DataFrame:
        name = self.SPLIT_NAMES[split]
        part = self._saved_split(lang, name) if self.local else self._hub_split(lang, name)
        feature = part.features.get("label")
        labels = part["label"]
        where = str(Path(self.source) / lang) if self.local else f"{self.source} (config '{lang}')"
        where = f"{where} [{name}]"
        if hasattr(feature, "names"):  # a ClassLabel: ids -> its own names -> our ids
            labels = _class_names(labels, feature.names, where)
        return _table(part["premise"], part["hypothesis"], labels, where)

    def _saved_split(self, lang: str, name: str):
        import datasets

        folder = Path(self.source) / lang
        if not folder.is_dir():
            raise XnliDataError(f"expected {folder}, a folder saved with datasets' save_to_disk "
                                f"(load_dataset('facebook/xnli', '{lang}').save_to_disk(...))")
        try:
            saved = datasets.load_from_disk(str(folder))
        except FileNotFoundError as err:
            raise XnliDataError(f"{folder}: not a saved datasets folder ({err})") from None
        if name not in saved:
            raise XnliDataError(f"{folder} has no split '{name}' (has {', '.join(saved)})")
        return saved[name]

    def _hub_split(self, lang: str, name: str):
        """One split at a time: zero-shot needs no training files but English's."""
        import datasets

        try:
            return datasets.load_dataset(self.source, lang, split=name)
        except Exception as err:  # the hub raises many types (offline, not found, bad config)
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise XnliDataError(f"could not load {self.source} config '{lang}' split '{name}' with datasets: "
                                f"{type(err).__name__}: {first_line}") from None


def open_source(data: str):
    """A reader for ``data``: a folder holding the releases, a folder of saved datasets, or a
    hub dataset name."""
    path = Path(data)
    if path.is_dir():
        if (path / "XNLI-1.0").is_dir() or (path / "XNLI-MT-1.0").is_dir():
            return ReleaseReader(path)
        return DatasetsReader(str(path), local=True)
    if path.exists() or data.startswith((".", "/", "~")) or data.count("/") != 1:
        raise XnliDataError(f"--data {data}: not a folder holding XNLI-1.0/ and XNLI-MT-1.0/ or saved "
                            "datasets folders per language, nor a hub dataset name such as facebook/xnli")
    return DatasetsReader(data, local=False)


def read_split(reader, split: str, lang: str, limit: int = 0) -> pd.DataFrame:
    table = reader.read(split, lang)
    return table.head(limit).reset_index(drop=True) if limit else table
