"""Length-grouped batches, process shards and padding."""

from __future__ import annotations

import random

import torch

from mdeberta.xnli.batching import Encoded, collate, concat, length_grouped_batches, shard, sorted_batches


def lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(5, 200) for _ in range(n)]


def test_grouped_batches_cover_every_pair_once_and_pad_little():
    sizes = lengths()
    batches = length_grouped_batches(sizes, 32, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert sorted(len(b) for b in batches) == [1000 % 32] + [32] * (1000 // 32)
    padded = sum(len(b) * max(sizes[i] for i in b) for b in batches)
    random_order = list(range(len(sizes)))
    random.Random(1).shuffle(random_order)
    random_padded = sum(32 * max(sizes[i] for i in random_order[k:k + 32]) for k in range(0, len(sizes), 32))
    assert padded < 1.1 * sum(sizes) < random_padded


def test_grouped_batches_are_a_function_of_seed_and_epoch():
    sizes = lengths()
    assert length_grouped_batches(sizes, 32, 1, 0) == length_grouped_batches(sizes, 32, 1, 0)
    assert length_grouped_batches(sizes, 32, 1, 0) != length_grouped_batches(sizes, 32, 1, 1)
    assert length_grouped_batches(sizes, 32, 1, 0) != length_grouped_batches(sizes, 32, 2, 0)


def test_shards_split_a_batch_exactly():
    batch = list(range(10, 42))
    parts = [shard(batch, rank, 3) for rank in range(3)]
    assert sorted(i for part in parts for i in part) == batch
    assert [len(part) for part in parts] == [11, 11, 10]


def test_sorted_batches_for_evaluation():
    sizes = [3, 9, 1, 7, 5]
    assert sorted_batches(sizes, 2) == [[1, 3], [4, 0], [2]]


def test_collate_pads_to_the_longest_row():
    data = Encoded.from_lists([[1, 5, 2], [1, 6, 7, 8, 2], [1, 2]], [0, 2, 1])
    batch = collate(data, [0, 1], pad_id=0, device="cpu")
    assert batch["input_ids"].tolist() == [[1, 5, 2, 0, 0], [1, 6, 7, 8, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert torch.equal(batch["labels"], torch.tensor([0, 2]))


def test_flat_storage_round_trip():
    first = Encoded.from_lists([[1, 5, 2], [1, 2]], [0, 1])
    second = Encoded.from_lists([[1, 7, 7, 7, 2]], [2])
    both = concat([first, second])
    assert [both.row(i).tolist() for i in range(3)] == [[1, 5, 2], [1, 2], [1, 7, 7, 7, 2]]
    assert both.lengths() == [3, 2, 5] and both.labels.tolist() == [0, 1, 2]
    assert [both.head(2).row(i).tolist() for i in range(2)] == [[1, 5, 2], [1, 2]] and len(both.head(2)) == 2
