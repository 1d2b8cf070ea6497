"""The training sample: a language-balanced draw of lines from the corpus stage's shards.

Language i gets the share q_i = p_i^alpha / sum_j p_j^alpha of the sample, p_i being its share
of the corpus' characters (XLM-R, mT5). Within a language the lines are drawn uniformly in one
streaming pass with a reservoir, so no language is ever held in memory beyond its quota. A
language with fewer lines than its quota contributes all of them, repeated up to the quota,
so the shares hold for the small languages the exponent is meant to lift.

The sample has ``--sentences`` lines unless the corpus is too small for that (see sample_quotas):
then it stops where drawing more would only repeat the whole corpus again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ..corpora.contract import TEXT_COLUMN, CorpusError, language_shards, language_shares


@dataclass
class LanguageSample:
    """What one language contributed to the sample, for sample_stats.json and the model card."""
    lang: str
    lines_available: int = 0
    characters_available: int = 0
    p: float = 0.0
    q: float = 0.0
    quota: int = 0
    lines_drawn: int = 0
    lines_repeated: int = 0
    empty_lines_skipped: int = 0
    long_lines_split: int = 0
    pieces_from_long_lines: int = 0
    sample_characters: int = 0


@dataclass
class Sample:
    lines: list[str]
    languages: dict[str, LanguageSample] = field(default_factory=dict)
    size_source: str = ""
    report_lines: dict[str, list[str]] = field(default_factory=dict)  # a separate draw, for the fit report

    @property
    def characters(self) -> int:
        return sum(lang.sample_characters for lang in self.languages.values())

    def to_json(self) -> dict:
        return {"lines": len(self.lines), "characters": self.characters, "size_source": self.size_source,
                "languages": {lang: asdict(stats) for lang, stats in self.languages.items()}}


def _paragraphs(shards: list[Path]) -> Iterator[list[str]]:
    """Batches of paragraphs (the lines SentencePiece trains on), one record batch at a time."""
    for path in shards:
        try:
            parquet = pq.ParquetFile(path)
            if TEXT_COLUMN not in parquet.schema_arrow.names:
                raise CorpusError(f"{path}: no '{TEXT_COLUMN}' column; is it a shard of `mdeberta corpus prepare`?")
            for batch in parquet.iter_batches(batch_size=4096, columns=[TEXT_COLUMN]):
                yield [line for text in batch.column(0).to_pylist() if text for line in text.split("\n")]
        except (OSError, ValueError) as err:  # pyarrow raises these for damaged files
            raise CorpusError(f"{path}: cannot read the shard ({err}); rerun the corpus stage") from None


def _sizes_from_stats(corpus: Path, langs: list[str]) -> dict[str, tuple[int, int]] | None:
    """(paragraphs, characters) per language from the corpus stage's stats.json, if it has them all."""
    try:
        rows = json.loads((corpus / "stats.json").read_text(encoding="utf-8"))["languages"]
        sizes = {row["lang"]: (int(row["kept_paragraphs"]), int(row["kept_characters"])) for row in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sizes if all(sizes.get(lang, (0, 0))[0] > 0 for lang in langs) else None


def _count_sizes(shards: dict[str, list[Path]], progress: bool) -> dict[str, tuple[int, int]]:
    sizes = {}
    for lang, parts in tqdm(shards.items(), desc="tokenizer count", unit="lang", disable=None if progress else True):
        lines = characters = 0
        for batch in _paragraphs(parts):
            nonempty = [line for line in batch if line.strip()]
            lines += len(nonempty)
            characters += sum(map(len, nonempty))
        sizes[lang] = (lines, characters)
    return sizes


def sample_quotas(lines: dict[str, int], q: dict[str, float], sentences: int) -> dict[str, int]:
    """Lines per language: the shares q of ``sentences``, or of less when the corpus is too small.

    The cap is the smallest sample with the shares q that holds every line of the corpus: the
    language with the most lines per unit of share, b = argmax_i n_i / q_i (n_i: its lines;
    usually the largest language), is drawn whole and exactly once, and every other language gets
    n_b * q_i / q_b lines, its lines repeated by exactly the factor the shares ask of it relative
    to b. A larger sample would only add copies of the whole corpus in the same proportions, which
    SentencePiece learns nothing new from; a smaller cap, such as the corpus' own line count,
    would leave lines of b out while still repeating the small languages. Since every language
    gets at least its n_i lines, the cap is never below the corpus' line count, so a corpus with
    at least ``sentences`` lines is sampled exactly as without it."""
    base = max((lang for lang in q if q[lang] > 0), key=lambda lang: lines[lang] / q[lang])
    capped = {lang: round(lines[base] * (q[lang] / q[base])) for lang in q}
    return capped if sum(capped.values()) < sentences else quotas(q, sentences)


def quotas(q: dict[str, float], sentences: int) -> dict[str, int]:
    """Lines per language summing exactly to ``sentences`` (largest remainders get the rounding)."""
    exact = {lang: share * sentences for lang, share in q.items()}
    counts = {lang: int(value) for lang, value in exact.items()}
    by_remainder = sorted(exact, key=lambda lang: exact[lang] - counts[lang], reverse=True)
    for lang in by_remainder[:sentences - sum(counts.values())]:
        counts[lang] += 1
    return counts


def split_long_line(line: str, max_bytes: int) -> list[str]:
    """Pieces of at most ``max_bytes`` UTF-8 bytes, cut at spaces where possible, at character
    boundaries otherwise; nothing is lost but the spaces at the cuts."""
    if len(line.encode("utf-8")) <= max_bytes:
        return [line]
    pieces, current, size = [], [], 0
    for word in line.split(" "):
        word_bytes = len(word.encode("utf-8"))
        if current and size + 1 + word_bytes > max_bytes:
            pieces.append(" ".join(current))
            current, size = [], 0
        if word_bytes > max_bytes:
            pieces.extend(_cut_word(word, max_bytes))
            continue
        size += word_bytes + (1 if current else 0)
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return [piece for piece in pieces if piece.strip()]


def _cut_word(word: str, max_bytes: int) -> list[str]:
    pieces, start, size = [], 0, 0
    for index, char in enumerate(word):
        width = len(char.encode("utf-8"))
        if size + width > max_bytes:
            pieces.append(word[start:index])
            start, size = index, 0
        size += width
    pieces.append(word[start:])
    return pieces


class Reservoir:
    """Uniform sample of ``capacity`` lines from a stream of unknown length (Algorithm R),
    with the random draws done a batch at a time."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.rng = rng
        self.lines: list[str] = []
        self.seen = 0

    def add(self, batch: list[str]) -> None:
        free = max(self.capacity - len(self.lines), 0)
        self.lines.extend(batch[:free])
        rest = batch[free:]
        if rest and self.capacity:
            positions = np.arange(self.seen + free, self.seen + len(batch))
            slots = self.rng.integers(0, positions + 1)
            for index in np.flatnonzero(slots < self.capacity):
                self.lines[slots[index]] = rest[index]
        self.seen += len(batch)


@dataclass
class SamplePlan:
    """What will be drawn, known before reading any text (from the corpus stage's stats)."""
    corpus: Path
    shards: dict[str, list[Path]]
    sizes: dict[str, tuple[int, int]]  # (lines, characters) per language
    size_source: str
    p: dict[str, float]
    q: dict[str, float]
    quota: dict[str, int]
    alpha: float
    sentences: int  # as asked; sum(quota) is less when the corpus is too small (sample_quotas)

    @property
    def lines(self) -> int:
        return sum(self.quota.values())

    @property
    def capped(self) -> bool:
        return self.lines < self.sentences

    def expected_characters(self) -> int:
        return int(sum(self.quota[lang] * chars / lines for lang, (lines, chars) in self.sizes.items() if lines))

    def describe(self) -> str:
        """One line: how many lines will be drawn, and why that many."""
        corpus_lines = sum(lines for lines, _ in self.sizes.values())
        shares = f"per-language shares alpha={self.alpha:g}"
        if not self.capped:
            return (f"sampling {self.lines:,} lines (--sentences; the corpus has {corpus_lines:,}); {shares}, "
                    f"lines repeated in {sum(self.quota[lang] > n for lang, (n, _) in self.sizes.items())} "
                    f"of {len(self.sizes)} languages")
        once = [lang for lang, (n, _) in self.sizes.items() if self.quota[lang] == n]
        most = max(self.quota[lang] / n for lang, (n, _) in self.sizes.items())
        others = f", the others repeated up to {most:.1f}x" if len(once) < len(self.sizes) else ""
        return (f"sampling {self.lines:,} lines (corpus has {corpus_lines:,} < --sentences {self.sentences:,}: "
                f"capped where more would repeat the whole corpus; {shares}: {', '.join(once)} drawn once{others})")


def plan_sample(corpus: Path, langs: list[str], alpha: float, sentences: int, progress: bool = True) -> SamplePlan:
    shards = language_shards(corpus, langs)
    sizes = _sizes_from_stats(corpus, list(shards))
    source = "stats.json of the corpus stage"
    if sizes is None:
        sizes, source = _count_sizes(shards, progress), "counted (no usable stats.json)"
    empty = [lang for lang in shards if sizes.get(lang, (0, 0))[0] == 0]
    if empty:
        raise CorpusError(f"{corpus}: language(s) {', '.join(empty)} have no text; remove them from --langs "
                          "or rerun the corpus stage")
    sizes = {lang: sizes[lang] for lang in shards}
    p, q = language_shares({lang: sizes[lang][1] for lang in shards}, alpha)
    quota = sample_quotas({lang: lines for lang, (lines, _) in sizes.items()}, q, sentences)
    return SamplePlan(corpus, shards, sizes, source, p, q, quota, alpha, sentences)


def read_lines(shards: list[Path]) -> Iterator[list[str]]:
    """Non-empty paragraphs of a language's shards, a batch at a time."""
    for batch in _paragraphs(shards):
        yield [line for line in batch if line.strip()]


def draw_sample(plan: SamplePlan, seed: int, max_sentence_length: int, report_lines: int = 0,
                progress: bool = True) -> Sample:
    corpus, shards, sizes, p, q, quota = plan.corpus, plan.shards, plan.sizes, plan.p, plan.q, plan.quota
    rng = np.random.default_rng(seed)
    report_rng = np.random.default_rng([seed, 1])
    sample = Sample(lines=[], size_source=plan.size_source)
    total_lines = sum(sizes[lang][0] for lang in shards)
    bar = tqdm(total=total_lines, desc="tokenizer sample", unit="line", unit_scale=True, dynamic_ncols=True,
               disable=None if progress else True)
    started, read_chars = time.time(), 0
    try:
        for lang, parts in shards.items():
            stats = LanguageSample(lang, sizes[lang][0], sizes[lang][1], p[lang], q[lang], quota[lang])
            reservoir, held = Reservoir(quota[lang], rng), Reservoir(report_lines, report_rng)
            for batch in _paragraphs(parts):
                lines = [line for line in batch if line.strip()]
                stats.empty_lines_skipped += len(batch) - len(lines)
                reservoir.add(lines)
                held.add(lines)
                bar.update(len(lines))
                read_chars += sum(map(len, lines))
                bar.set_postfix_str(f"{read_chars / 1e6 / max(time.time() - started, 1e-9):.1f} Mchar/s", refresh=False)
            if reservoir.seen == 0:
                raise CorpusError(f"{corpus / lang}: no text in its shards; remove '{lang}' from --langs "
                                  "or rerun the corpus stage")
            stats.lines_available = reservoir.seen
            sample.languages[lang] = stats
            sample.report_lines[lang] = held.lines
            sample.lines.extend(_fill_quota(reservoir.lines, quota[lang], rng, stats, max_sentence_length))
    finally:
        bar.close()
    return sample


def _fill_quota(drawn: list[str], quota: int, rng: np.random.Generator, stats: LanguageSample,
                max_sentence_length: int) -> list[str]:
    """Repeat a small language's lines up to its quota, then split the lines SentencePiece
    would skip, counting both."""
    stats.lines_drawn = len(drawn)
    lines = list(drawn)
    if drawn and len(drawn) < quota:
        whole, rest = divmod(quota, len(drawn))
        lines = drawn * whole + [drawn[i] for i in rng.choice(len(drawn), rest, replace=False)]
        stats.lines_repeated = quota - len(drawn)
    out = []
    for line in lines:
        pieces = split_long_line(line, max_sentence_length)
        if len(pieces) > 1:
            stats.long_lines_split += 1
            stats.pieces_from_long_lines += len(pieces)
        out.extend(pieces)
    stats.sample_characters = sum(map(len, out))
    return out
