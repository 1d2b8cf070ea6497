import numpy as np

from mdeberta.corpora.charclass import paragraph_key
from mdeberta.corpora.dedup import Deduplicator, KeySet, first_occurrences


def test_keyset_holds_8_bytes_per_key_and_finds_members():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 2**64, 100_000, dtype=np.uint64))
    seen = KeySet()
    assert not seen.add_new(keys[::2]).any()
    present = seen.add_new(keys)
    assert (present == (np.arange(len(keys)) % 2 == 0)).all()
    assert len(seen) == len(keys) and seen.nbytes == 8 * len(keys)


def test_first_occurrence_wins_within_and_across_calls():
    seen = KeySet()
    assert first_occurrences(np.array([5, 3, 5, 7, 3], np.uint64), seen).tolist() == [True, True, False, True, False]
    assert first_occurrences(np.array([7, 8, 8], np.uint64), seen).tolist() == [False, True, False]


def test_duplicate_documents_drop_whole_and_do_not_shadow_paragraphs():
    dedup = Deduplicator()
    first = dedup.check_shard(np.array([1, 2], np.uint64), np.array([10, 11, 12], np.uint64), np.array([2, 1]))
    assert first.duplicate_docs.tolist() == [False, False] and first.keep_paragraphs.all()
    second = dedup.check_shard(np.array([1, 3], np.uint64), np.array([10, 11, 11, 13], np.uint64), np.array([2, 2]))
    assert second.duplicate_docs.tolist() == [True, False]
    assert second.keep_paragraphs.tolist() == [False, False, False, True]


def test_paragraph_key_ignores_case_digits_punctuation_and_spacing():
    assert paragraph_key("Call us on 0800 123!") == paragraph_key("call US on 0900-456")
    assert paragraph_key("Call us today") != paragraph_key("Call us tomorrow")
    assert paragraph_key("का") != paragraph_key("कि")  # vowel signs are letters, not punctuation
