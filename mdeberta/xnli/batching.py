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

import numpy as np
import torch

MEGA_BATCH = 50


@dataclass
class Encoded:
    """Token ids of a set of pairs ([CLS] premise [SEP] hypothesis [SEP]) and their labels.

    The ids sit in one flat int32 array with row offsets: translate-train-all holds 5.9 million
    pairs, which as Python lists of ints would take over 10 GB."""
    tokens: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_lists(cls, ids: list[list[int]], labels) -> "Encoded":
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in ids], out=offsets[1:])
        tokens = np.fromiter((t for row in ids for t in row), dtype=np.int32, count=int(offsets[-1]))
        return cls(tokens, offsets, np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def row(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> list[int]:
        return np.diff(self.offsets).tolist()

    def head(self, count: int) -> "Encoded":
        return Encoded(self.tokens[:self.offsets[count]], self.offsets[:count + 1], self.labels[:count])


def encode(tokenizer, table, max_length: int, chunk: int = 10_000) -> Encoded:
    """Cuts the longer of the two texts first (``longest_first``), as GLUE fine-tuning does;
    tokenises ``chunk`` pairs at a time so the Python lists stay small."""
    parts = []
    for start in range(0, len(table), chunk):
        rows = table.iloc[start:start + chunk]
        ids = tokenizer(list(rows.premise), list(rows.hypothesis), truncation="longest_first",
                        max_length=max_length, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]
        parts.append(Encoded.from_lists(ids, rows.label))
    return concat(parts) if parts else Encoded.from_lists([], [])


def concat(parts: list[Encoded]) -> Encoded:
    shifts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + shift for p, shift in zip(parts, shifts)])
    return Encoded(np.concatenate([p.tokens for p in parts]), offsets.astype(np.int64),
                   np.concatenate([p.labels for p in parts]))


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
    rows = [data.row(i) for i in indices]
    longest = max(len(ids) for ids in rows)
    input_ids = torch.full((len(indices), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), longest), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, :len(ids)] = torch.from_numpy(ids)
        attention_mask[row, :len(ids)] = 1
    labels = torch.from_numpy(data.labels[indices])
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
            "labels": labels.to(device)}
