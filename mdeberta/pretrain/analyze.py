"""``mdeberta pretrain analyze``: the word-embedding statistics of DeBERTaV3's Table 1.

For each table (E_G; E_D; under GDES also E_delta) the average cosine similarity of pairs of word
embeddings. How pairs are drawn: ``pairs`` pairs (i, j), i != j, uniformly with replacement from
the token ids the model was trained on — ids that occur in the run's training token streams (the
first ``scan_tokens`` tokens of each language are read) — leaving out [PAD] [CLS] [SEP] [UNK]
[MASK] and the rows past the tokenizer. When the run's streams are gone (and none are given),
every tokenizer id but those five is used; a given folder without streams is an error. A zero
row (E_delta never updated) has no direction: pairs touching one are left out, and a table of
zero rows has no value. The same pairs are used for every table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..manifest import write_json_atomic
from .checkpoint import load_model, require_intact
from .data import TokenStreams
from .tokens import INVENTORY, TokenStreamsError

# DeBERTaV3 paper, Table 1 (base models): average cosine similarity of word embeddings.
PAPER_TABLE_1 = {"es": {"E_G": 0.02}, "nes": {"E_G": 0.45, "E_D": 0.02},
                 "gdes": {"E_G": 0.45, "E_D": 0.29, "E_delta": 0.02}}


def embedding_tables(model) -> dict[str, torch.Tensor]:
    generator = model.generator.deberta.embeddings.word_embeddings.weight.detach()
    if model.sharing == "es":
        return {"E_G": generator}  # E_D is E_G
    discriminator = model.discriminator.deberta.embeddings.word_embeddings
    if model.sharing == "nes":
        return {"E_G": generator, "E_D": discriminator.weight.detach()}
    return {"E_G": generator, "E_D": discriminator.weight.detach(), "E_delta": discriminator.delta.detach()}


def trained_ids(model, tokens_dir: Path | None, scan_tokens: int) -> np.ndarray:
    special = model.special_token_ids.tolist()
    limit = model.real_vocab_size
    if tokens_dir is not None:
        seen = np.zeros(limit, dtype=bool)
        for stream in TokenStreams.open(tokens_dir, "train").tokens.values():
            seen[np.asarray(stream[:scan_tokens], dtype=np.int64)] = True
        ids = np.flatnonzero(seen)
    else:
        ids = np.arange(limit)
    return ids[~np.isin(ids, special)].astype(np.int64)


def streams_folder(checkpoint: Path, tokens_dir: Path | None) -> Path | None:
    """The token streams to draw ids from: the folder given, which must hold streams (a wrong
    path would silently widen the draw to every id), else the run's own <out>/tokens beside
    <out>/checkpoints/step-N where it has them."""
    if tokens_dir is None:
        own = checkpoint.parent.parent / "tokens"
        return own if (own / INVENTORY).is_file() else None
    if not (Path(tokens_dir) / INVENTORY).is_file():
        raise TokenStreamsError(f"{tokens_dir}: no {INVENTORY}; pass the tokens folder of a pretraining run "
                                "(<out>/tokens), or leave out --tokens to use the checkpoint's own run")
    return Path(tokens_dir)


def average_cosine(table: torch.Tensor, first: np.ndarray, second: np.ndarray) -> tuple[float, int]:
    """Mean cosine similarity over the pairs whose rows are both nonzero, and how many those were."""
    a, b = table[torch.from_numpy(first)].float(), table[torch.from_numpy(second)].float()
    usable = (a.norm(dim=-1) > 0) & (b.norm(dim=-1) > 0)
    if not usable.any():
        return float("nan"), 0
    cosine = (F.normalize(a[usable], dim=-1) * F.normalize(b[usable], dim=-1)).sum(-1)
    return float(cosine.mean()), int(usable.sum())


def embedding_statistics(checkpoint: Path, pairs: int = 100_000, seed: int = 0, tokens_dir: Path | None = None,
                         scan_tokens: int = 10_000_000) -> pd.DataFrame:
    checkpoint = require_intact(Path(checkpoint))
    model = load_model(checkpoint)
    ids = trained_ids(model, streams_folder(checkpoint, tokens_dir), scan_tokens)
    rng = np.random.default_rng(seed)
    first = rng.choice(ids, size=pairs)
    second = rng.choice(ids, size=pairs)
    first, second = first[first != second], second[first != second]
    paper = PAPER_TABLE_1[model.sharing]
    rows = []
    for name, table in embedding_tables(model).items():
        mean, used = average_cosine(table, first, second)
        rows.append({"sharing": model.sharing, "table": name, "avg_cosine": mean, "pairs": used,
                     "ids": len(ids), "paper_base": paper.get(name)})
    return pd.DataFrame(rows)


def write_statistics(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, frame.to_dict(orient="records"))
