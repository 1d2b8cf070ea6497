"""Corpus shards -> per-language token streams: content, held-out slice, reuse, resume and bad inputs."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm

from mdeberta.errors import UserError
from mdeberta.pretrain import tokens
from mdeberta.pretrain.data import TokenStreams
from mdeberta.pretrain.tokens import (
    INVENTORY,
    SHARDS,
    VALID,
    TokenInventory,
    held_out_key,
    index_path,
    stream_path,
    tokenize_corpus,
)
from tests.pretrain.conftest import EMPTY_DOCUMENTS, LITERAL_MASK, corpus_documents

FRACTION = 0.2


def documents(out: Path, lang: str, split: str) -> list[np.ndarray]:
    stream = np.fromfile(stream_path(out, lang, split), dtype=np.uint32)
    offsets = np.load(index_path(out, lang, split))
    assert offsets[0] == 0 and offsets[-1] == len(stream) and np.all(np.diff(offsets) > 1)
    return [stream[start:end] for start, end in pairwise(offsets)]


def tokenize(corpus: Path, tokenizer: Path, out: Path, **options) -> TokenInventory:
    return tokenize_corpus(corpus, tokenizer, out, validation_fraction=FRACTION, progress=False,
                           **{"workers": 1, **options})


def folder_bytes(out: Path) -> dict[str, bytes]:
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


def test_streams_hold_every_document_once_followed_by_sep(corpus, tokenizer, tmp_path):
    inventory = tokenize(corpus, tokenizer, tmp_path / "tokens")
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer / "spm.model"))
    assert (inventory.cls_id, inventory.sep_id, inventory.pad_id) == (1, 2, 0)
    assert inventory.mask_id == sp.get_piece_size() and inventory.vocab_size == sp.get_piece_size() + 1
    for lang, shards in corpus_documents().items():
        texts = [text for shard in shards for text in shard if text not in EMPTY_DOCUMENTS]
        written = {split: documents(inventory.out, lang, split) for split in ("train", VALID)}
        for doc in written["train"] + written[VALID]:
            assert doc[-1] == inventory.sep_id and inventory.sep_id not in doc[:-1]
        decoded = {split: [sp.decode(doc[:-1].tolist()) for doc in docs] for split, docs in written.items()}
        # Both splits together: each document exactly once, in corpus order within a split.
        expected = [sp.decode(sp.encode(text)) for text in texts]
        assert sorted(decoded["train"] + decoded[VALID]) == sorted(expected)
        assert decoded["train"] == [text for text in expected if text in decoded["train"]]
        row = inventory.languages[lang]
        assert (row.docs, row.valid_docs) == (len(written["train"]), len(written[VALID]))
        assert row.tokens == sum(map(len, written["train"])) and row.valid_tokens == sum(map(len, written[VALID]))
        assert row.empty_docs == (len(EMPTY_DOCUMENTS) if lang == "en" else 0)
    mask_doc = next(doc for doc in documents(inventory.out, "en", "train") + documents(inventory.out, "en", VALID)
                    if sp.decode(doc[:-1].tolist()).startswith("Click"))
    assert sp.decode(mask_doc[:-1].tolist()) == LITERAL_MASK.replace("\n", " ")  # paragraphs read as one text
    assert inventory.mask_id not in mask_doc  # web text never becomes the special token


def test_held_out_documents_follow_their_ids_and_every_language_has_some(corpus, tokenizer, tmp_path):
    inventory = tokenize(corpus, tokenizer, tmp_path / "tokens")
    for lang, shards in corpus_documents().items():
        ids = [f"{lang}-{part}-{i}" for part, shard in enumerate(shards) for i, text in enumerate(shard)
               if text not in EMPTY_DOCUMENTS]
        held_out = [doc_id for doc_id in ids if held_out_key(lang, doc_id) < FRACTION]
        if lang == "sw":  # two documents, neither below the fraction: the smaller key is held out
            assert held_out == []
            held_out = [min(ids, key=lambda doc_id: held_out_key(lang, doc_id))]
        assert inventory.languages[lang].valid_docs == len(held_out) >= 1
        assert inventory.languages[lang].docs == len(ids) - len(held_out) >= 1
    loaded = TokenInventory.load(inventory.out)
    assert loaded == inventory


def test_worker_count_does_not_change_the_files(corpus, tokenizer, tmp_path):
    tokenize(corpus, tokenizer, tmp_path / "one", workers=1)
    tokenize(corpus, tokenizer, tmp_path / "two", workers=2)
    one, two = folder_bytes(tmp_path / "one"), folder_bytes(tmp_path / "two")
    assert one.keys() == two.keys() and all(one[name] == two[name] for name in one)
    assert not (tmp_path / "one" / SHARDS).exists()


def test_a_finished_folder_is_reused_without_reading_the_corpus(corpus, tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "tokens"
    tokenize(corpus, tokenizer, out)
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}

    def must_not_run(task):
        raise AssertionError(f"re-tokenized {task.source}")

    monkeypatch.setattr(tokens, "tokenize_shard", must_not_run)
    tokenize(corpus, tokenizer, out)
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before

    (corpus / "fr" / "part-00000.parquet").touch()  # a changed input is redone
    with pytest.raises(AssertionError, match="re-tokenized"):
        tokenize(corpus, tokenizer, out)


def test_an_interrupted_run_redoes_only_unfinished_shards(corpus, tokenizer, tmp_path, monkeypatch):
    tokenize(corpus, tokenizer, tmp_path / "clean")
    out = tmp_path / "tokens"
    real, done = tokens.tokenize_shard, []

    def interrupted_after_two(task):
        if len(done) == 2:
            (task.output("train", ".bin.tmp")).write_bytes(b"half a shard")
            raise KeyboardInterrupt
        done.append(task.source)
        return real(task)

    monkeypatch.setattr(tokens, "tokenize_shard", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        tokenize(corpus, tokenizer, out)
    assert not (out / INVENTORY).exists()

    redone = []
    monkeypatch.setattr(tokens, "tokenize_shard", lambda task: redone.append(task.source) or real(task))
    tokenize(corpus, tokenizer, out)
    all_shards = sorted(corpus.glob("*/part-*.parquet"))
    assert len(redone) == len(all_shards) - 2 and not set(redone) & set(done)
    assert folder_bytes(out) == folder_bytes(tmp_path / "clean")


def test_a_corrupt_shard_is_named_and_the_others_are_kept(corpus, tokenizer, tmp_path):
    bad = corpus / "fr" / "part-00001.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "tokens"
    with pytest.raises(UserError, match="fr/part-00001.parquet"):
        tokenize(corpus, tokenizer, out)
    assert len(list((out / SHARDS).glob("*/part-*.json"))) == 4  # every good shard finished and kept
    assert not (out / INVENTORY).exists()


def test_a_shard_without_text_is_named(corpus, tokenizer, tmp_path):
    pq.write_table(pa.table({"id": ["x"], "content": ["words"]}), corpus / "fr" / "part-00001.parquet")
    with pytest.raises(UserError, match="fr/part-00001.parquet: no 'text' column"):
        tokenize(corpus, tokenizer, tmp_path / "tokens")


@pytest.mark.parametrize("case, message", [
    ("no corpus", "corpus not found"),
    ("no shards", "no <lang>/part-"),
    ("no spm.model", "no spm.model"),
    ("damaged spm.model", "not a readable SentencePiece model"),
    ("unknown language", "no shards for language"),
    ("bad fraction", "validation fraction"),
])
def test_bad_inputs_are_user_errors(case, message, corpus, tokenizer, tmp_path):
    options = {"corpus": corpus, "tokenizer": tokenizer, "out": tmp_path / "tokens"}
    if case == "no corpus":
        options["corpus"] = tmp_path / "missing"
    elif case == "no shards":
        options["corpus"] = tmp_path / "empty"
        (tmp_path / "empty" / "en").mkdir(parents=True)
    elif case == "no spm.model":
        options["tokenizer"] = tmp_path
    elif case == "damaged spm.model":
        options["tokenizer"] = tmp_path / "damaged"
        options["tokenizer"].mkdir()
        (options["tokenizer"] / "spm.model").write_bytes((tokenizer / "spm.model").read_bytes()[:1000])
    elif case == "unknown language":
        options["langs"] = ["en", "xx"]
    elif case == "bad fraction":
        options["validation_fraction"] = 1.0
    with pytest.raises(UserError, match=message):
        tokenize_corpus(progress=False, workers=1, **options)


def test_a_missing_index_is_named_and_the_rerun_rebuilds_it(corpus, tokenizer, tmp_path):
    tokenize(corpus, tokenizer, tmp_path / "tokens")
    (tmp_path / "tokens" / "en.idx.npy").unlink()
    with pytest.raises(UserError, match="en.idx.npy: missing"):
        TokenStreams.open(tmp_path / "tokens")
    tokenize(corpus, tokenizer, tmp_path / "tokens")
    assert (tmp_path / "tokens" / "en.idx.npy").is_file()


def test_inventory_lists_the_sources(corpus, tokenizer, tmp_path):
    inventory = tokenize(corpus, tokenizer, tmp_path / "tokens", langs=["sw", "fr"])
    data = json.loads((inventory.out / INVENTORY).read_text(encoding="utf-8"))
    assert list(data["languages"]) == ["sw", "fr"]
    assert [row["path"] for row in data["languages"]["fr"]["shards"]] == ["fr/part-00000.parquet"]
    assert data["vocab_size"] == inventory.vocab_size and data["tokenizer"]["sha256"]
