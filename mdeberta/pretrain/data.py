"""Training sequences: packed from the per-language token streams, a language drawn per sequence.

A sequence is [CLS] + the next ``seq_len - 2`` tokens of one language's stream + [SEP]: no
padding, document boundaries marked by the [SEP]s already in the stream. Each language keeps a
cursor that wraps around the end of its stream, so every token is used exactly once per epoch of
that language, whatever the other languages do.

Languages are drawn with q_i proportional to p_i^alpha (p_i the language's share of the training
tokens; XLM-R's alpha 0.3 lifts the small languages). The draws of a global batch come from a
generator seeded by (seed, batch number): every rank computes the whole global batch's languages
and cursor advances, which costs a few integers, and reads the tokens of its own slice only. So
one process and N processes with the same global batch see the same sequences, and the data
position (batch number, cursors, epochs) is a handful of integers saved in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..corpora.contract import language_shares
from .tokens import (
    TOKEN_DTYPE,
    TokenInventory,
    TokenStreamsError,
    index_path,
    stream_path,
)


class PackingError(UserError):
    """A packing setting or a saved data position does not fit these streams."""


@dataclass
class TokenStreams:
    """One split's token streams, memory-mapped: opening costs nothing whatever the corpus size."""
    tokens: dict[str, np.ndarray]  # language -> uint32 stream
    split: str = "train"

    @property
    def langs(self) -> list[str]:
        return list(self.tokens)

    def sizes(self) -> dict[str, int]:
        return {lang: len(stream) for lang, stream in self.tokens.items()}

    @classmethod
    def open(cls, tokens_dir: Path, split: str = "train", langs: list[str] | None = None) -> TokenStreams:
        """Languages with no token in the split are left out of ``valid`` (a one-document language has no
        held-out slice; with validation off there are none at all) and refused in ``train``."""
        tokens_dir = Path(tokens_dir)
        available = list(TokenInventory.load(tokens_dir).languages)
        missing = [lang for lang in langs or [] if lang not in available]
        if missing:
            raise TokenStreamsError(f"{tokens_dir}: no token streams for {', '.join(missing)}; "
                                    f"it has {', '.join(available)}")
        tokens = {}
        for lang in langs or available:
            path = stream_path(tokens_dir, lang, split)
            for required in (path, index_path(tokens_dir, lang, split)):
                if not required.is_file():
                    raise TokenStreamsError(f"{required}: missing; rerun `mdeberta pretrain run` to tokenize "
                                            "the corpus again")
            if path.stat().st_size % np.dtype(TOKEN_DTYPE).itemsize:
                raise TokenStreamsError(f"{path}: truncated (not whole uint32 tokens); delete {tokens_dir} "
                                        "and rerun `mdeberta pretrain run`")
            if path.stat().st_size:
                tokens[lang] = np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
            elif split == "train":
                raise TokenStreamsError(f"{path}: language '{lang}' has no training tokens; leave it out of --langs")
        return cls(tokens, split)


def language_probabilities(sizes: dict[str, int], alpha: float) -> np.ndarray:
    """q_i = p_i^alpha / sum_j p_j^alpha with p_i = n_i / sum n (the tokenizer sample's rule), in
    the order of ``sizes``."""
    return np.array(list(language_shares(sizes, alpha)[1].values()), dtype=np.float64)


def read_circular(stream: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` tokens from ``start``, continuing at the stream's beginning past its end."""
    if start + length <= len(stream):
        return stream[start:start + length]
    return stream[(start + np.arange(length)) % len(stream)]


class PackedSequences:
    """The training data in order: ``next_batch`` gives this rank's slice of the next global batch."""

    def __init__(self, streams: TokenStreams, seq_len: int, alpha: float, seed: int, cls_id: int, sep_id: int):
        if seq_len < 3:
            raise PackingError(f"sequence length must be at least 3 ([CLS], a token, [SEP]), not {seq_len}")
        if alpha < 0:
            raise PackingError(f"language sampling alpha must be >= 0, not {alpha}")
        self.streams = streams
        self.seq_len, self.alpha, self.seed = seq_len, alpha, seed
        self.cls_id, self.sep_id = cls_id, sep_id
        self.langs = streams.langs
        self.sizes = streams.sizes()
        self.probabilities = language_probabilities(self.sizes, alpha)
        self.batches = 0  # global batches drawn so far
        self.cursors = {lang: 0 for lang in self.langs}
        self.epochs = {lang: 0 for lang in self.langs}  # completed passes over each language's stream
        self.languages_drawn = {lang: 0 for lang in self.langs}  # sequences per language, all ranks together

    @property
    def content_length(self) -> int:
        return self.seq_len - 2

    def draw_languages(self, batch: int, size: int) -> np.ndarray:
        """Language positions of global batch number ``batch``: a function of (seed, batch) only."""
        rng = np.random.Generator(np.random.PCG64([self.seed, batch]))
        return rng.choice(len(self.langs), size=size, p=self.probabilities)

    def next_batch(self, global_batch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        if global_batch <= 0 or global_batch % world_size:
            raise PackingError(f"the global batch ({global_batch}) must be a positive multiple of the number "
                               f"of processes ({world_size}); change the batch size or the process count")
        if not 0 <= rank < world_size:
            raise PackingError(f"rank {rank} is outside 0..{world_size - 1}")
        per_rank = global_batch // world_size
        mine = range(rank * per_rank, (rank + 1) * per_rank)
        batch = torch.empty(per_rank, self.seq_len, dtype=torch.int64)
        batch[:, 0], batch[:, -1] = self.cls_id, self.sep_id
        for position, choice in enumerate(self.draw_languages(self.batches, global_batch)):
            lang = self.langs[choice]
            start = self.cursors[lang]
            if position in mine:
                content = read_circular(self.streams.tokens[lang], start, self.content_length)
                batch[position - mine.start, 1:-1] = torch.from_numpy(content.astype(np.int64))
            self._advance(lang, start)
        self.batches += 1
        return batch

    def _advance(self, lang: str, start: int) -> None:
        passes, self.cursors[lang] = divmod(start + self.content_length, self.sizes[lang])
        self.epochs[lang] += passes
        self.languages_drawn[lang] += 1

    def state_dict(self) -> dict:
        return {"seed": self.seed, "seq_len": self.seq_len, "alpha": self.alpha, "batches": self.batches,
                "sizes": dict(self.sizes), "cursors": dict(self.cursors), "epochs": dict(self.epochs),
                "languages_drawn": dict(self.languages_drawn)}

    def load_state_dict(self, state: dict) -> None:
        """Refuses a position saved over other streams or settings: it would silently mean other data."""
        saved = {"seed": state["seed"], "seq_len": state["seq_len"], "alpha": state["alpha"], "sizes": state["sizes"]}
        current = {"seed": self.seed, "seq_len": self.seq_len, "alpha": self.alpha, "sizes": self.sizes}
        if saved != current:
            changed = [name for name in saved if saved[name] != current[name]]
            raise PackingError(f"the saved data position was made with other {', '.join(changed)} "
                               f"({', '.join(f'{name}={saved[name]}' for name in changed)}); resume with the "
                               "same token streams and settings, or start a new run")
        self.batches = int(state["batches"])
        self.cursors = {lang: int(state["cursors"][lang]) for lang in self.langs}
        self.epochs = {lang: int(state["epochs"][lang]) for lang in self.langs}
        self.languages_drawn = {lang: int(state["languages_drawn"][lang]) for lang in self.langs}


def validation_batches(streams: TokenStreams, seq_len: int, batch_size: int, max_sequences: int | None,
                       cls_id: int, sep_id: int) -> list[torch.Tensor]:
    """The held-out sequences, the same at every call: each language's stream cut into consecutive
    sequences (its last one completed from the stream's start, so a small language still gives one),
    taken one language after another in turn, so a ``max_sequences`` cap keeps every language in."""
    if seq_len < 3 or batch_size <= 0:
        raise PackingError(f"validation needs seq_len >= 3 and batch_size >= 1 (got {seq_len}, {batch_size})")
    content = seq_len - 2
    starts = {lang: range(0, len(stream), content) for lang, stream in streams.tokens.items()}
    order = [(lang, start) for turn in range(max(map(len, starts.values())))
             for lang, lang_starts in starts.items() if turn < len(lang_starts)
             for start in [lang_starts[turn]]]
    order = order[:max_sequences] if max_sequences is not None else order
    sequences = torch.empty(len(order), seq_len, dtype=torch.int64)
    sequences[:, 0], sequences[:, -1] = cls_id, sep_id
    for row, (lang, start) in enumerate(order):
        sequences[row, 1:-1] = torch.from_numpy(read_circular(streams.tokens[lang], start, content).astype(np.int64))
    return list(sequences.split(batch_size))
