"""A tiny corpus in the corpus stage's layout and a tiny SentencePiece model with DeBERTa's ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm

from mdeberta.pretrain.tokens import tokenize_corpus
from mdeberta.tokenizer.normalization import control_rules
from tests.tokenizer.conftest import sample_documents, write_shard

# Documents that test the edges: nothing left after encoding, and web text that spells a special token.
EMPTY_DOCUMENTS = ["", "   "]
LITERAL_MASK = "Click [MASK] to continue.\nThe next paragraph follows."


def corpus_documents() -> dict[str, list[list[str]]]:
    """Per language, the documents of each shard: English in two shards, Swahili with only two documents."""
    en, fr = sample_documents("en"), sample_documents("fr")
    return {"en": [en[:12] + [LITERAL_MASK], en[12:] + EMPTY_DOCUMENTS], "fr": [fr],
            "sw": [sample_documents("sw")[:2]]}


def write_corpus(folder: Path) -> Path:
    for lang, shards in corpus_documents().items():
        for part, documents in enumerate(shards):
            write_shard(folder, lang, documents, part)
    return folder


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("pretrain") / "corpus")


@pytest.fixture(scope="module")
def tokens(corpus_dir, tokenizer) -> Path:
    """The corpus' token streams, a fifth of each language's documents held out."""
    out = corpus_dir.parent / "tokens"
    tokenize_corpus(corpus_dir, tokenizer, out, validation_fraction=0.2, workers=1, progress=False)
    return out


def train_tokenizer(folder: Path, vocab_size: int = 400) -> Path:
    """Trained directly with SentencePiece (a second, not the tokenizer stage's minutes): the ids and
    normalisation rules the stage uses, a vocabulary small enough for the tiny corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "rules.tsv"
    rules.write_text(control_rules(), encoding="utf-8")
    lines = [line for shards in corpus_documents().values() for shard in shards for doc in shard
             for line in doc.split("\n") if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(folder / "spm"), model_type="unigram", vocab_size=vocab_size,
        byte_fallback=True, pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]",
        eos_piece="[SEP]", unk_piece="[UNK]", normalization_rule_tsv=str(rules), minloglevel=2)
    rules.unlink()
    (folder / "spm.vocab").unlink()
    return folder
