"""Packed training sequences: length and content, language shares, determinism, resume and ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdeberta.errors import UserError
from mdeberta.pretrain.data import (
    PackedSequences,
    TokenStreams,
    language_probabilities,
    validation_batches,
)
from mdeberta.pretrain.tokens import tokenize_corpus

CLS, SEP = 1, 2
BASE = {"a": 1_000_000, "b": 2_000_000, "c": 3_000_000}  # a language's tokens are BASE + position


def synthetic(sizes: dict[str, int]) -> TokenStreams:
    """Every token of every language distinct, so a token's origin and position can be read back."""
    return TokenStreams({lang: np.arange(BASE[lang], BASE[lang] + size, dtype=np.uint32)
                         for lang, size in sizes.items()})


def packed(sizes: dict[str, int], seq_len: int = 16, alpha: float = 0.3, seed: int = 0) -> PackedSequences:
    return PackedSequences(synthetic(sizes), seq_len, alpha, seed, CLS, SEP)


def language_of(sequence: torch.Tensor) -> str:
    return next(lang for lang, base in BASE.items() if base <= int(sequence[1]) < base + 1_000_000)


@pytest.mark.parametrize("seq_len", [5, 16, 64])
def test_each_token_is_used_once_per_epoch_of_its_language(seq_len):
    sizes = {"a": 1000, "b": 333, "c": 50}  # not multiples of the content length; c shorter than some sequences
    data = packed(sizes, seq_len)
    contents = {lang: [] for lang in sizes}
    while min(data.epochs.values()) < 2:
        batch = data.next_batch(8)
        assert batch.shape == (8, seq_len) and batch.dtype == torch.int64
        assert torch.all(batch[:, 0] == CLS) and torch.all(batch[:, -1] == SEP)
        for sequence in batch:
            contents[language_of(sequence)].extend(sequence[1:-1].tolist())
    for lang, size in sizes.items():
        stream = list(range(BASE[lang], BASE[lang] + size))
        assert data.epochs[lang] * size <= len(contents[lang]) < (data.epochs[lang] + 1) * size
        for epoch in range(data.epochs[lang]):  # each epoch: the stream once, in order, continued across sequences
            assert contents[lang][epoch * size:(epoch + 1) * size] == stream
        assert data.cursors[lang] == len(contents[lang]) % size


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_language_shares_follow_p_to_the_alpha(alpha):
    """100:10:1 tokens; each language's count over 20,000 sequences is binomial(n, q_i): it must lie
    within 4 standard deviations of n * q_i (a false alarm about once in 16,000 seeds)."""
    sizes = {"a": 100_000, "b": 10_000, "c": 1_000}
    data = packed(sizes, seq_len=4, alpha=alpha)
    q = language_probabilities(sizes, alpha)
    expected = {0.0: [1 / 3] * 3, 1.0: [100 / 111, 10 / 111, 1 / 111]}.get(alpha)
    if expected is not None:
        np.testing.assert_allclose(q, expected)
    for _ in range(200):
        data.next_batch(100)
    n = 20_000
    drawn = np.array([data.languages_drawn[lang] for lang in sizes])
    assert drawn.sum() == n
    assert np.all(np.abs(drawn - n * q) <= 4 * np.sqrt(n * q * (1 - q))), (drawn / n, q)


def test_alpha_lifts_small_languages():
    sizes = {"a": 100_000, "b": 10_000, "c": 1_000}
    shares = [language_probabilities(sizes, alpha)[2] for alpha in (1.0, 0.7, 0.3, 0.0)]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1 / 3)


def test_same_seed_same_batches_other_seed_other_batches():
    sizes = {"a": 5000, "b": 700, "c": 90}
    first, second, other = packed(sizes), packed(sizes), packed(sizes, seed=1)
    batches = [first.next_batch(6) for _ in range(5)]
    assert all(torch.equal(batch, second.next_batch(6)) for batch in batches)
    assert not all(torch.equal(batch, other.next_batch(6)) for batch in batches)


def test_a_saved_position_resumes_exactly():
    sizes = {"a": 5000, "b": 700, "c": 90}
    uninterrupted = packed(sizes)
    expected = [uninterrupted.next_batch(6) for _ in range(30)]
    interrupted = packed(sizes)
    for _ in range(17):
        interrupted.next_batch(6)
    state = json.loads(json.dumps(interrupted.state_dict()))  # as a checkpoint stores it
    resumed = packed(sizes)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.next_batch(6), batch) for batch in expected[17:])
    assert resumed.state_dict() == uninterrupted.state_dict()
    assert sum(state["languages_drawn"].values()) == 17 * 6


def test_rank_slices_make_up_the_single_process_batch():
    sizes = {"a": 5000, "b": 700, "c": 90}
    single, ranks = packed(sizes), [packed(sizes) for _ in range(2)]
    for _ in range(10):
        whole = single.next_batch(8)
        slices = [data.next_batch(8, rank=rank, world_size=2) for rank, data in enumerate(ranks)]
        assert all(part.shape == (4, 16) for part in slices)
        assert torch.equal(torch.cat(slices), whole)
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=3), seq_len=st.integers(3, 40),
       world_size=st.sampled_from([1, 2, 4]), per_rank=st.integers(1, 3), alpha=st.sampled_from([0.0, 0.3, 1.0]))
def test_any_sequence_is_one_language_read_in_order(sizes, seq_len, world_size, per_rank, alpha):
    """Whatever the stream sizes (shorter than a sequence included) and process count: full length,
    [CLS] first, [SEP] last, the content a circular run of one stream starting where that language's
    previous sequence ended, and the ranks' slices adding up to the one-process batch."""
    sizes = dict(zip(BASE, sizes))
    single = packed(sizes, seq_len, alpha)
    ranks = [packed(sizes, seq_len, alpha) for _ in range(world_size)]
    next_start = dict.fromkeys(sizes, 0)
    for _ in range(3):
        whole = single.next_batch(per_rank * world_size)
        parts = [data.next_batch(per_rank * world_size, rank, world_size) for rank, data in enumerate(ranks)]
        assert torch.equal(torch.cat(parts), whole)
        assert whole.shape == (per_rank * world_size, seq_len)
        assert torch.all(whole[:, 0] == CLS) and torch.all(whole[:, -1] == SEP)
        for sequence in whole:
            lang = language_of(sequence)
            expected = [BASE[lang] + (next_start[lang] + i) % sizes[lang] for i in range(seq_len - 2)]
            assert sequence[1:-1].tolist() == expected
            next_start[lang] = (next_start[lang] + seq_len - 2) % sizes[lang]
    assert single.cursors == next_start


def test_bad_batch_split_and_foreign_positions_are_refused():
    data = packed({"a": 100, "b": 10})
    with pytest.raises(UserError, match="multiple of the number of processes"):
        data.next_batch(9, rank=0, world_size=2)
    with pytest.raises(UserError, match="sequence length"):
        packed({"a": 100}, seq_len=2)
    state = data.state_dict()
    with pytest.raises(UserError, match="seq_len"):
        packed({"a": 100, "b": 10}, seq_len=32).load_state_dict(state)
    with pytest.raises(UserError, match="sizes"):
        packed({"a": 100, "b": 11}).load_state_dict(state)


def test_validation_batches_are_fixed_and_cover_every_language():
    streams = synthetic({"a": 100, "b": 30, "c": 5})
    batches = validation_batches(streams, 12, 4, None, CLS, SEP)
    assert all(torch.equal(x, y) for x, y in zip(batches, validation_batches(streams, 12, 4, None, CLS, SEP)))
    sequences = torch.cat(batches)
    assert sequences.shape == (10 + 3 + 1, 12) and [len(batch) for batch in batches] == [4, 4, 4, 2]
    assert torch.all(sequences[:, 0] == CLS) and torch.all(sequences[:, -1] == SEP)
    for lang, size in {"a": 100, "b": 30, "c": 5}.items():  # every token of the held-out streams is read
        content = torch.cat([row[1:-1] for row in sequences if language_of(row) == lang]).tolist()
        assert set(content) == set(range(BASE[lang], BASE[lang] + size))
    capped = torch.cat(validation_batches(streams, 12, 4, 3, CLS, SEP))
    assert [language_of(row) for row in capped] == ["a", "b", "c"]


def test_streams_open_the_tokenized_corpus(corpus, tokenizer, tmp_path):
    inventory = tokenize_corpus(corpus, tokenizer, tmp_path, validation_fraction=0.2, workers=1, progress=False)
    train, valid = TokenStreams.open(tmp_path), TokenStreams.open(tmp_path, "valid")
    assert train.sizes() == {lang: row.tokens for lang, row in inventory.languages.items()}
    assert valid.sizes() == {lang: row.valid_tokens for lang, row in inventory.languages.items()}
    assert TokenStreams.open(tmp_path, langs=["sw"]).langs == ["sw"]
    with pytest.raises(UserError, match="no token streams for xx"):
        TokenStreams.open(tmp_path, langs=["xx"])
    with pytest.raises(UserError, match="not a finished token folder"):
        TokenStreams.open(tmp_path / "valid")
    batch = PackedSequences(train, 32, 0.3, 0, inventory.cls_id, inventory.sep_id).next_batch(4)
    assert batch.shape == (4, 32) and int(batch.max()) < inventory.vocab_size


def test_no_held_out_slice_opens_as_no_validation(corpus, tokenizer, tmp_path):
    inventory = tokenize_corpus(corpus, tokenizer, tmp_path, validation_fraction=0.0, workers=1, progress=False)
    assert all(row.valid_docs == 0 for row in inventory.languages.values())
    assert TokenStreams.open(tmp_path, "valid").langs == []
