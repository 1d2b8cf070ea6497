"""Exact deduplication of documents and paragraphs at corpus scale: the first occurrence of a key
in input order (shard, then row) is kept, every later one is a repeat.

Three steps, each parallel and resumable, none holding the whole corpus's keys in one process:

1. ``write_sorted_keys``, per cleaned shard: its keys sorted in chunks of ``CHUNK``, each beside
   its position ``shard << 40 | row``. Linear in the shard's size.
2. ``find_repeats``, per task t of P: the keys of the t-th of P equal ranges of the 64-bit key
   space, from every shard, in sub-ranges of about ``step_keys`` keys (hashes are uniform, so
   the sub-ranges are even). A sub-range is one contiguous slice of each sorted chunk; the
   slices, joined and sorted by key, group each value's occurrences, and all but the one of
   smallest position are repeats. The task writes the positions of the repeats, sorted. Memory:
   a sub-range's working set (fixed) plus 8 bytes per repeat; time linear in the task's keys
   (sub-ranges of bounded size).
3. ``repeats_in_shard``, per shard of the write phase: each task's repeats within the shard's
   position range, found by binary search in memory-mapped files.

Documents and paragraphs are two independent key sets. Paragraphs of repeated documents take
part in the paragraph step: such a document is the same text as an earlier one, so each of its
paragraph keys already occurred earlier and none of them can be first; the decisions are the
ones of checking only the other documents' paragraphs (up to a 64-bit collision of document hashes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..storage import writing

ROW_BITS = 40  # rows per shard < 2^40; shard indexes < 2^24
CHUNK = 1 << 19  # keys sorted together in a shard's key file: 4 MB, sorted in cache (35 ns a key; 2M: 58)
FENCE = 1024  # keys per block of a chunk, found through the fence and read whole
KEY_SPACE = 1 << 64


class DedupError(ValueError):
    pass


def positions(shard_index: int, count: int) -> np.ndarray:
    if count >= 1 << ROW_BITS or shard_index >= 1 << (64 - ROW_BITS):
        raise DedupError(f"shard {shard_index} with {count} keys is past the {1 << (64 - ROW_BITS)} shards "
                         f"of 2^{ROW_BITS} rows that deduplication addresses; split the input into smaller files")
    return (np.uint64(shard_index) << np.uint64(ROW_BITS)) | np.arange(count, dtype=np.uint64)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, array.nbytes, partial=tmp):
        with tmp.open("wb") as f:
            np.save(f, array)
        os.replace(tmp, path)


def _fence_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".npy") + ".fence.npy")


def write_sorted_keys(path: Path, keys: np.ndarray, shard_index: int) -> None:
    """``keys`` in row order -> ``path``: a [2, n] uint64 array, the keys sorted within each chunk
    of ``CHUNK`` (equal keys in any order), and their positions; beside it every ``FENCE``-th key,
    by which a task finds its ranges in each chunk. Chunks keep every sort the size of a
    cache-friendly array, so the time per key does not grow with the shard."""
    table = np.empty((2, len(keys)), np.uint64)
    rows = positions(shard_index, len(keys))
    for start in range(0, len(keys), CHUNK):
        order = np.argsort(keys[start:start + CHUNK]) + start
        table[0, start:start + len(order)] = keys[order]
        table[1, start:start + len(order)] = rows[order]
    _save_atomic(_fence_path(path), table[0, ::FENCE].copy())
    _save_atomic(path, table)  # last: its presence says the shard is done


class _SortedRun:
    """One sorted chunk of a shard's key file, read by plain file reads (pages read through a
    memory map would stay in this process's resident memory, a few for every search), from a
    cursor that the ranges of a task, taken in increasing order, move forward."""

    def __init__(self, path: Path, offset: int, count: int, first: int, length: int, fence: np.ndarray):
        self.path, self.offset, self.count, self.first, self.length = path, offset, count, first, length
        self.fence = fence  # every FENCE-th key of the chunk
        self.cursor = 0

    @classmethod
    def chunks_of(cls, path: Path) -> list[_SortedRun]:
        with path.open("rb") as f:
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            shape, _, _ = read_header(f)
            offset = f.tell()
        count = shape[-1]
        fence = np.load(_fence_path(path))  # 2 bytes of memory per 1,000 keys
        return [cls(path, offset, count, first, min(CHUNK, count - first), fence[first // FENCE:(first + CHUNK) // FENCE])
                for first in range(0, count, CHUNK)]

    def first_at_least(self, value: int) -> int:
        """The fence narrows the search to one block of FENCE keys, read and searched."""
        if value >= KEY_SPACE:
            return self.length
        block = int(np.searchsorted(self.fence, np.uint64(value)))
        start, end = max(block - 1, 0) * FENCE, min(block * FENCE, self.length)
        return start + int(np.searchsorted(self.read(0, start, end), np.uint64(value)))

    def take_below(self, value: int) -> tuple[int, int]:
        """The entries from the cursor to the first key >= value; the cursor moves past them."""
        start, self.cursor = self.cursor, self.first_at_least(value)
        return start, self.cursor

    def read(self, row: int, start: int, end: int) -> np.ndarray:
        """Row 0 (keys) or 1 (positions), entries [start, end) of the chunk."""
        at = self.offset + (row * self.count + self.first + start) * 8
        return np.fromfile(self.path, dtype=np.uint64, count=end - start, offset=at)


def task_range(task: int, tasks: int) -> tuple[int, int]:
    """The task's share [lo, hi) of the 64-bit key space."""
    return task * KEY_SPACE // tasks, (task + 1) * KEY_SPACE // tasks


def find_repeats(key_files: list[Path], task: int, tasks: int, step_keys: int | None = None) -> np.ndarray:
    """Sorted positions of the repeated keys in the task's range, over ``key_files`` (one per
    shard, in input order). A sub-range holds ``step_keys`` keys: 2^22, or 256 per sorted chunk
    when there are more chunks, so that the work per chunk and sub-range stays a small part."""
    runs = [run for path in key_files for run in _SortedRun.chunks_of(path)]
    step_keys = step_keys or max(1 << 22, 256 * len(runs))
    lo, hi = task_range(task, tasks)
    for run in runs:
        run.cursor = run.first_at_least(lo)
    held = sum(run.first_at_least(hi) - run.cursor for run in runs)
    steps = max(1, -(-held // step_keys))
    found = []
    for step in range(1, steps + 1):
        below = lo + (hi - lo) * step // steps
        slices = [(run, *run.take_below(below)) for run in runs]
        slices = [(run, start, end) for run, start, end in slices if end > start]
        if not slices:
            continue
        keys = np.concatenate([run.read(0, start, end) for run, start, end in slices])
        order = np.argsort(keys)
        keys = keys[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])  # where each value's run begins
        del keys
        where = np.concatenate([run.read(1, start, end) for run, start, end in slices])[order]
        del order
        # the first occurrence of a value is its smallest position; every other one is a repeat
        first = np.repeat(np.minimum.reduceat(where, starts), np.diff(np.r_[starts, len(where)]))
        found.append(where[where != first])
        del where, first
    repeats = np.concatenate(found or [np.zeros(0, np.uint64)])
    del found
    repeats.sort()
    return repeats


def write_repeats(path: Path, repeats: np.ndarray) -> None:
    _save_atomic(path, repeats)


def repeats_in_shard(repeat_files: list[Path], shard_index: int, count: int) -> np.ndarray:
    """Bool per row of the shard: True where the key is a repeat, from every task's file."""
    lo, hi = np.uint64(shard_index << ROW_BITS), np.uint64((shard_index << ROW_BITS) + count)
    repeated = np.zeros(count, dtype=bool)
    for path in repeat_files:
        found = np.load(path, mmap_mode="r")
        rows = found[np.searchsorted(found, lo):np.searchsorted(found, hi)] - lo
        repeated[rows.astype(np.int64)] = True
    return repeated
