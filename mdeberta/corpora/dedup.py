"""Exact deduplication of paragraphs and documents across the whole input, in input order.

Memory bound: the set of keys seen so far holds 8 bytes per unique paragraph and 8 bytes per
unique document (sorted uint64 arrays, no Python objects), plus the keys of the chunk of documents
being checked (65,536 documents at a time). The sorted keys are split into 4096 buckets by their top 12 bits, so adding a
shard's new keys copies one bucket at a time and never doubles the whole set.

Shards are checked one after another in input order, so the first occurrence of a paragraph is
the one kept no matter how many processes cleaned the shards or in which order they finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BUCKET_BITS = 12
_SHIFT = np.uint64(64 - _BUCKET_BITS)
_EDGES = np.arange(1 << _BUCKET_BITS, dtype=np.uint64) << _SHIFT


class KeySet:
    """A set of uint64 keys at 8 bytes per key."""

    def __init__(self):
        self._buckets = [np.empty(0, np.uint64) for _ in range(1 << _BUCKET_BITS)]

    def __len__(self) -> int:
        return sum(map(len, self._buckets))

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buckets)

    def _spans(self, sorted_keys: np.ndarray):
        bounds = np.searchsorted(sorted_keys, _EDGES).tolist() + [len(sorted_keys)]
        for bucket in np.unique(sorted_keys >> _SHIFT).tolist():
            yield bucket, bounds[bucket], bounds[bucket + 1]

    def add_new(self, sorted_unique: np.ndarray) -> np.ndarray:
        """Insert sorted, distinct keys; return a mask of those that were already present."""
        present = np.zeros(len(sorted_unique), dtype=bool)
        for bucket, start, end in self._spans(sorted_unique):
            keys, members = sorted_unique[start:end], self._buckets[bucket]
            if len(members):
                at = np.minimum(np.searchsorted(members, keys), len(members) - 1)
                present[start:end] = members[at] == keys
            fresh = keys[~present[start:end]]
            if len(fresh):
                merged = np.concatenate([members, fresh])
                merged.sort(kind="stable")  # two sorted runs: a linear merge
                self._buckets[bucket] = merged
        return present


def first_occurrences(keys: np.ndarray, seen: KeySet) -> np.ndarray:
    """Mask of keys that are the first of their value in ``keys`` and absent from ``seen``;
    ``seen`` then holds them too."""
    keep = np.zeros(len(keys), dtype=bool)
    if not len(keys):
        return keep
    unique, first = np.unique(keys, return_index=True)
    present = seen.add_new(unique)
    keep[first[~present]] = True
    return keep


@dataclass
class ShardDuplicates:
    duplicate_docs: np.ndarray  # bool per document
    keep_paragraphs: np.ndarray  # bool per paragraph, documents' paragraphs concatenated


class Deduplicator:
    def __init__(self):
        self.documents = KeySet()
        self.paragraphs = KeySet()

    def check_shard(self, doc_hash: np.ndarray, paragraph_keys: np.ndarray, paragraphs_per_doc: np.ndarray) -> ShardDuplicates:
        """Documents first (a repeated document is dropped whole, under its own reason), then
        the paragraphs of the remaining documents."""
        duplicate_docs = ~first_occurrences(doc_hash, self.documents)
        candidates = ~np.repeat(duplicate_docs, paragraphs_per_doc)
        keep = np.zeros(len(paragraph_keys), dtype=bool)
        keep[candidates] = first_occurrences(paragraph_keys[candidates], self.paragraphs)
        return ShardDuplicates(duplicate_docs, keep)
