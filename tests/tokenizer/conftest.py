"""A small corpus in the corpus stage's layout, and one tokenizer trained on it per session."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdeberta.tokenizer.settings import TokenizerSettings
from mdeberta.tokenizer.stage import TokenizerStage
from tests.conftest import SAMPLE

VOCAB = 1500


def write_shard(folder: Path, lang: str, documents: list[str], part: int = 0) -> Path:
    """One ``<lang>/part-NNNNN.parquet`` as the corpus stage writes it."""
    path = folder / lang / f"part-{part:05d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": [f"{lang}-{part}-{i}" for i in range(len(documents))], "text": documents,
                      "lang": [lang] * len(documents), "lang_score": [1.0] * len(documents),
                      "source": ["test"] * len(documents)})
    pq.write_table(table, path)
    return path


def sample_documents(lang: str) -> list[str]:
    """The bundled raw sample's paragraphs for ``lang``, a document per blank-line block."""
    text = (SAMPLE / f"{lang}.txt").read_text(encoding="utf-8")
    return [block.strip() for block in text.split("\n\n") if block.strip()]


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for path in sorted(SAMPLE.glob("*.txt")):
        documents = sample_documents(path.stem)
        half = len(documents) // 2
        write_shard(folder, path.stem, documents[:half], 0)
        write_shard(folder, path.stem, documents[half:], 1)
    return folder


@pytest.fixture(scope="session")
def trained(sample_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    settings = TokenizerSettings(vocab_size=VOCAB, sentences=4000, report_lines=100)
    assert TokenizerStage(settings, sample_corpus, out, progress=False, echo=lambda _: None).run() == 0
    return out
