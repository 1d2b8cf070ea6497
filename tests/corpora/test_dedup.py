import numpy as np
import pytest

from mdeberta.corpora import dedup
from mdeberta.corpora.charclass import paragraph_key


def first_occurrence_reference(shards: list[np.ndarray]) -> list[np.ndarray]:
    """Per shard, True where a key repeats an earlier one in input order (a Python set)."""
    seen, repeated = set(), []
    for keys in shards:
        flags = []
        for key in keys.tolist():
            flags.append(key in seen)
            seen.add(key)
        repeated.append(np.array(flags, bool))
    return repeated


def shards_with_repeats(rng, sizes, pool=400):
    """Keys drawn from a small pool, so values repeat within and across shards; a few keys sit
    at the edges of the key space and of every task range, where an off-by-one would show."""
    values = rng.integers(0, 2**64, pool, dtype=np.uint64)
    edges = [0, 2**64 - 1, *(dedup.task_range(t, 4)[0] for t in range(1, 4)), dedup.task_range(1, 3)[0]]
    values[:len(edges)] = np.array(edges, np.uint64)
    return [values[rng.integers(0, pool, size)] for size in sizes]


@pytest.mark.parametrize("tasks", [1, 2, 3, 4])
@pytest.mark.parametrize("step_keys, fence, chunk", [(7, 4, 12), (1 << 20, dedup.FENCE, dedup.CHUNK)])
def test_repeats_are_every_occurrence_after_the_first_in_input_order(tmp_path, monkeypatch, tasks, step_keys, fence,
                                                                    chunk):
    # chunks of 12 keys in blocks of 4: every search crosses blocks, every shard has many chunks
    monkeypatch.setattr(dedup, "FENCE", fence)
    monkeypatch.setattr(dedup, "CHUNK", chunk)
    shards = shards_with_repeats(np.random.default_rng(tasks), [500, 0, 300, 450])
    files = [tmp_path / f"{index}.npy" for index in range(len(shards))]
    for index, (path, keys) in enumerate(zip(files, shards)):
        dedup.write_sorted_keys(path, keys, index)
    repeat_files = []
    for task in range(tasks):
        found = dedup.find_repeats(files, task, tasks, step_keys=step_keys)
        assert (found[1:] >= found[:-1]).all()  # sorted, for the write phase's binary search
        repeat_files.append(tmp_path / f"repeats-{task}.npy")
        dedup.write_repeats(repeat_files[-1], found)
    for index, (keys, expected) in enumerate(zip(shards, first_occurrence_reference(shards))):
        assert (dedup.repeats_in_shard(repeat_files, index, len(keys)) == expected).all()


def test_sorted_keys_sit_beside_their_positions(tmp_path):
    keys = np.array([9, 3, 9, 3, 3], np.uint64)
    dedup.write_sorted_keys(tmp_path / "k.npy", keys, 5)
    stored = np.load(tmp_path / "k.npy")
    assert stored[0].tolist() == [3, 3, 3, 9, 9]  # one chunk
    rows = (stored[1] - (np.uint64(5) << np.uint64(dedup.ROW_BITS))).tolist()
    assert sorted(rows[:3]) == [1, 3, 4] and sorted(rows[3:]) == [0, 2]


def test_task_ranges_cover_the_key_space_once():
    for tasks in (1, 3, 64):
        ranges = [dedup.task_range(t, tasks) for t in range(tasks)]
        assert ranges[0][0] == 0 and ranges[-1][1] == 2**64
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_positions_past_what_dedup_addresses_are_refused():
    with pytest.raises(dedup.DedupError, match="split the input into smaller files"):
        dedup.positions(1 << 24, 3)


def test_paragraph_key_ignores_case_digits_punctuation_and_spacing():
    assert paragraph_key("Call us on 0800 123!") == paragraph_key("call US on 0900-456")
    assert paragraph_key("Call us today") != paragraph_key("Call us tomorrow")
    assert paragraph_key("का") != paragraph_key("कि")  # vowel signs are letters, not punctuation
