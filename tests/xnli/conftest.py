"""Tiny XNLI fixtures in the three source formats (15 languages), and a tiny model folder.

Pairs are built from the bundled raw sample: the premise is a paragraph's opening, the hypothesis
another paragraph's; labels cycle through the three classes. Nothing here is real NLI; the
fixtures exercise formats, label mapping and the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mdeberta.corpora.languages import XNLI_LANGUAGES
from tests.conftest import SAMPLE

SIZES = {"train": 24, "dev": 6, "test": 9}
NAMES = ("entailment", "neutral", "contradiction")
XNLI_1_COLUMNS = ["language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                  "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2",
                  "label3", "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match"]


def pairs(lang: str, split: str) -> pd.DataFrame:
    """Deterministic pairs; the first premise of every set carries a lone double quote."""
    lines = [" ".join(line.split()) for line in (SAMPLE / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    offset = {"train": 0, "dev": 40, "test": 60}[split]
    rows = []
    for i in range(SIZES[split]):
        premise = lines[(offset + i) % len(lines)][:120]
        hypothesis = lines[(offset + 7 * i + 3) % len(lines)][:60]
        rows.append({"premise": ('"' if i == 0 else "") + premise, "hypothesis": hypothesis,
                     "label": NAMES[(i + len(lang)) % 3]})
    return pd.DataFrame(rows)


def write_tsv(path: Path, table: pd.DataFrame) -> None:
    """Tab-separated, nothing quoted or escaped: as the releases are written."""
    lines = ["\t".join(table.columns)] + ["\t".join(map(str, row)) for row in table.itertuples(index=False)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_releases(root: Path, langs=XNLI_LANGUAGES) -> Path:
    """XNLI-1.0 (dev/test, all languages in one 19-column file) and XNLI-MT-1.0 (train per language,
    with XNLI-MT's spelling "contradictory")."""
    (root / "XNLI-1.0").mkdir(parents=True)
    (root / "XNLI-MT-1.0" / "multinli").mkdir(parents=True)
    for split in ("dev", "test"):
        rows = []
        for lang in langs:
            for i, pair in pairs(lang, split).iterrows():
                row = dict.fromkeys(XNLI_1_COLUMNS, "x")
                row.update(language=lang, gold_label=pair.label, sentence1=pair.premise, sentence2=pair.hypothesis,
                           pairID=str(i))
                rows.append(row)
        write_tsv(root / "XNLI-1.0" / f"xnli.{split}.tsv", pd.DataFrame(rows, columns=XNLI_1_COLUMNS))
    for lang in langs:
        train = pairs(lang, "train").replace({"label": {"contradiction": "contradictory"}})
        write_tsv(root / "XNLI-MT-1.0" / "multinli" / f"multinli.train.{lang}.tsv",
                  train.rename(columns={"hypothesis": "hypo"}))
    return root


def xnli_config(lang: str, names=NAMES):
    """One language's config of facebook/xnli as ``load_dataset("facebook/xnli", lang)`` returns it:
    splits train / validation / test, features premise, hypothesis and a ClassLabel whose order
    is ``names`` (facebook/xnli: entailment, neutral, contradiction)."""
    import datasets

    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(names))})
    splits = {}
    for split, name in (("train", "train"), ("dev", "validation"), ("test", "test")):
        table = pairs(lang, split)
        table["label"] = [names.index(label) for label in table.label]
        splits[name] = datasets.Dataset.from_pandas(table, features=features, preserve_index=False)
    return datasets.DatasetDict(splits)


def write_saved_datasets(root: Path, langs=XNLI_LANGUAGES, names=NAMES) -> Path:
    """``root/<lang>`` as ``load_dataset("facebook/xnli", lang).save_to_disk`` writes it."""
    import datasets

    datasets.disable_progress_bars()
    for lang in langs:
        xnli_config(lang, names).save_to_disk(str(root / lang))
    return root


@pytest.fixture
def hub(monkeypatch) -> str:
    """facebook/xnli as the hub serves it, without the network: ``datasets.load_dataset`` answers
    from in-memory configs built from the fixtures, and fails as the hub does for an unknown
    dataset or config."""
    import datasets

    configs = {}

    def load_dataset(path, name=None, split=None, **kwargs):
        if path != "facebook/xnli":
            raise FileNotFoundError(f"Dataset '{path}' doesn't exist on the Hub or cannot be accessed.")
        if name not in XNLI_LANGUAGES:
            raise ValueError(f"BuilderConfig '{name}' not found. Available: {list(XNLI_LANGUAGES)}")
        if name not in configs:
            configs[name] = xnli_config(name)
        return configs[name][split]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return "facebook/xnli"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tiny model's matrices gain nothing from threads, and on a loaded machine two threads
    fighting for cores made every step several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def releases(tmp_path_factory) -> Path:
    return write_releases(tmp_path_factory.mktemp("releases"))


@pytest.fixture(scope="session")
def saved(tmp_path_factory) -> Path:
    return write_saved_datasets(tmp_path_factory.mktemp("saved"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny randomly initialised deberta-v2 encoder saved with an 800-piece tokenizer, as an
    exported discriminator folder looks."""
    import torch

    from mdeberta import model
    from mdeberta.tokenizer.settings import TokenizerSettings
    from mdeberta.tokenizer.stage import TokenizerStage, load_fast_tokenizer
    from tests.tokenizer.conftest import sample_documents, write_shard

    corpus = tmp_path_factory.mktemp("corpus")
    for lang in XNLI_LANGUAGES:
        write_shard(corpus, lang, sample_documents(lang)[:20])
    tokenizer_dir = tmp_path_factory.mktemp("tokenizer")
    settings = TokenizerSettings(vocab_size=800, sentences=1500, report_lines=10, character_coverage=0.98)
    assert TokenizerStage(settings, corpus, tokenizer_dir, progress=False, echo=lambda _: None).run() == 0
    tokenizer = load_fast_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    model.build("tiny", vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
