"""Pairs -> token ids -> padded batches.

Training batches are grouped by length: pairs are shuffled, cut into mega-batches of 50 batches,
each sorted by length and cut into batches, and the batches shuffled. Padding then costs a few
percent instead of the ~2x of random batches, while every batch still mixes the whole set.
Evaluation sorts the whole set by length. Batches are a pure function of (seed, epoch), so a
resumed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

MEGA_BATCH = 50


@dataclass
class Encoded:
    """Token ids of one set of pairs ([CLS] premise [SEP] hypothesis [SEP]) and their labels."""
    ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]


def encode(tokenizer, table, max_length: int) -> Encoded:
    """Cuts the longer of the two texts first (``longest_first``), as GLUE fine-tuning does."""
    ids = tokenizer(list(table.premise), list(table.hypothesis), truncation="longest_first",
                    max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    return Encoded(ids, list(table.label))


def concat(parts: list[Encoded]) -> Encoded:
    return Encoded([ids for part in parts for ids in part.ids], [y for part in parts for y in part.labels])


def batches_per_epoch(examples: int, batch_size: int) -> int:
    return -(-examples // batch_size)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    mega = batch_size * MEGA_BATCH
    for start in range(0, len(order), mega):
        group = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shard(batch: list[int], rank: int, world: int) -> list[int]:
    """This process' part of a global batch: every rank gets neighbours in length, so the
    processes pad alike and the global batch is the one a single process would take."""
    return batch[rank::world]


def collate(data: Encoded, indices: list[int], pad_id: int, device) -> dict[str, torch.Tensor]:
    longest = max(len(data.ids[i]) for i in indices)
    input_ids = torch.full((len(indices), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), longest), dtype=torch.long)
    for row, i in enumerate(indices):
        ids = data.ids[i]
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
    labels = torch.tensor([data.labels[i] for i in indices])
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
            "labels": labels.to(device)}
