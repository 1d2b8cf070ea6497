"""The language-balanced sample: shares, uniform draws within a language, the cap for small corpora,
long lines, bad corpora."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mdeberta.corpora.contract import CorpusError, language_shares
from mdeberta.tokenizer.sampling import (Reservoir, draw_sample, plan_sample, quotas, sample_quotas,
                                         split_long_line)
from tests.tokenizer.conftest import write_shard

SIZES = {"big": 6000, "mid": 600, "small": 60}  # lines per language; every line has 18 characters
TINY = {"big": 300, "mid": 60, "small": 12}


def numbered_corpus(folder: Path, sizes: dict[str, int]) -> Path:
    """Lines "<first letter of lang><line number> line text", three to a document, in two shards."""
    for lang, lines in sizes.items():
        documents = ["\n".join(f"{lang[0]}{n:07d} line text" for n in range(start, min(start + 3, lines)))
                     for start in range(0, lines, 3)]
        write_shard(folder, lang, documents[::2], 0)
        write_shard(folder, lang, documents[1::2], 1)
    return folder


@pytest.fixture(scope="module")
def skewed_corpus(tmp_path_factory) -> Path:
    return numbered_corpus(tmp_path_factory.mktemp("skewed"), SIZES)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    return numbered_corpus(tmp_path_factory.mktemp("tiny"), TINY)


def test_quotas_sum_exactly():
    counts = quotas({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 1000)
    assert sum(counts.values()) == 1000 and max(counts.values()) - min(counts.values()) <= 1


def test_sample_shares_match_q_on_a_skewed_corpus(skewed_corpus):
    plan = plan_sample(skewed_corpus, [], alpha=0.3, sentences=1500, progress=False)
    assert plan.size_source.startswith("counted")  # no stats.json in this corpus
    sample = draw_sample(plan, seed=0, max_sentence_length=4192, progress=False)
    assert len(sample.lines) == 1500
    drawn = {lang: sum(line[0] == lang[0] for line in sample.lines) for lang in SIZES}
    for lang, stats in sample.languages.items():
        assert stats.lines_available == SIZES[lang]
        assert drawn[lang] == stats.quota == pytest.approx(plan.q[lang] * 1500, abs=1)
        assert stats.p == pytest.approx(SIZES[lang] / sum(SIZES.values()))
    # alpha lifts the small language well above its 0.9% of the corpus
    assert drawn["small"] / 1500 > 0.1 > SIZES["small"] / sum(SIZES.values())
    small = sample.languages["small"]
    assert small.lines_drawn == 60 and small.lines_repeated == small.quota - 60
    big = [int(line[1:8]) for line in sample.lines if line[0] == "b"]
    assert len(set(big)) == len(big), "lines of a large language are drawn without repetition"


def test_a_tiny_corpus_is_sampled_once_at_the_alpha_shares(tiny_corpus):
    plan = plan_sample(tiny_corpus, [], alpha=0.3, sentences=1_000_000, progress=False)
    sample = draw_sample(plan, seed=0, max_sentence_length=4192, progress=False)
    # "big" has the most lines per unit of share: the sample holds it once, and the others at its rate
    # times their alpha ratio, n_big * q_i / q_big lines
    assert plan.quota == {lang: round(300 * plan.q[lang] / plan.q["big"]) for lang in TINY}
    assert len(sample.lines) == plan.lines == 599
    assert plan.describe() == ("sampling 599 lines (corpus has 372 < --sentences 1,000,000: capped where more "
                               "would repeat the whole corpus; per-language shares alpha=0.3: big drawn once, "
                               "the others repeated up to 9.5x)")
    copies = Counter(sample.lines)
    for lang, n in TINY.items():
        lines = {line: count for line, count in copies.items() if line[0] == lang[0]}
        assert len(lines) == n, "every line of the corpus is in the sample"
        assert sum(lines.values()) / len(sample.lines) == pytest.approx(plan.q[lang], abs=1 / len(sample.lines))
        assert max(lines.values()) == math.ceil(plan.quota[lang] / n), "repeats spread evenly over the lines"
    assert sample.languages["big"].lines_repeated == 0 and sample.languages["small"].lines_repeated == 102


def test_the_cap_holds_every_line_and_never_shrinks_a_large_enough_corpus():
    rng = np.random.default_rng(0)
    for _ in range(200):
        langs = [f"l{i}" for i in range(rng.integers(1, 20))]
        lines = {lang: int(rng.integers(1, 10_000)) for lang in langs}
        _, q = language_shares({lang: n * int(rng.integers(5, 500)) for lang, n in lines.items()},
                               float(rng.uniform(0, 1)))
        capped = sample_quotas(lines, q, 10**9)
        assert all(capped[lang] >= n for lang, n in lines.items())
        assert any(capped[lang] == n for lang, n in lines.items()), "some language is drawn exactly once"
        corpus_lines = sum(lines.values())
        assert sample_quotas(lines, q, corpus_lines) == quotas(q, corpus_lines)


@pytest.mark.parametrize("corpus, sentences, digest", [
    ("skewed_corpus", 1500, "17a89c3f9af5e14a"),
    ("skewed_corpus", 6660, "f189cb92f0afc517"),  # exactly the corpus' lines
    ("sample_corpus", 992, "a4d7bfe071a7ab14"),  # 15 languages of real text, all of its lines
    ("sample_corpus", 500, "c1d01df685eed174"),
])
def test_a_corpus_with_enough_lines_gets_the_same_sample_as_before_the_cap(request, corpus, sentences, digest):
    """Digests of the samples drawn by the code before the cap existed (same seed): the large
    runs keep their sample, and so their pieces."""
    plan = plan_sample(request.getfixturevalue(corpus), [], alpha=0.3, sentences=sentences, progress=False)
    sample = draw_sample(plan, seed=0, max_sentence_length=4192, progress=False)
    assert not plan.capped and len(sample.lines) == sentences
    assert hashlib.sha256("\n".join(sample.lines).encode()).hexdigest()[:16] == digest


def test_draws_are_uniform_within_a_language(skewed_corpus):
    plan = plan_sample(skewed_corpus, ["big"], alpha=0.3, sentences=600, progress=False)
    positions = []
    for seed in range(5):
        positions += [int(line[1:8]) for line in draw_sample(plan, seed, 4192, progress=False).lines]
    counts, _ = np.histogram(positions, bins=10, range=(0, 6000))
    expected = len(positions) / 10
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 27.9, counts  # 99.9th percentile of chi-square with 9 degrees of freedom


def test_reservoir_keeps_everything_below_capacity():
    reservoir = Reservoir(10, np.random.default_rng(0))
    reservoir.add(["a", "b"])
    reservoir.add(["c"])
    assert reservoir.lines == ["a", "b", "c"] and reservoir.seen == 3


def test_long_lines_are_split_not_dropped():
    line = " ".join(["ሰላም"] * 400 + ["x" * 5000])
    pieces = split_long_line(line, 100)
    assert all(len(p.encode("utf-8")) <= 100 for p in pieces)
    assert "".join(pieces).replace(" ", "") == line.replace(" ", "")
    assert split_long_line("short line", 100) == ["short line"]


def test_long_lines_are_counted(tmp_path):
    write_shard(tmp_path, "en", ["word " * 3000 + "\nshort line"])
    plan = plan_sample(tmp_path, [], alpha=0.3, sentences=2, progress=False)
    sample = draw_sample(plan, 0, 4192, progress=False)
    stats = sample.languages["en"]
    assert stats.long_lines_split == 1 and stats.pieces_from_long_lines == 4
    assert len(sample.lines) == 5


def test_missing_corpus(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found: .*run `mdeberta corpus prepare"):
        plan_sample(tmp_path / "nowhere", [], 0.3, 10)


def test_folder_without_shards(tmp_path):
    (tmp_path / "en").mkdir()
    with pytest.raises(CorpusError, match="no <lang>/part-\\*.parquet shards"):
        plan_sample(tmp_path, [], 0.3, 10)


def test_unknown_language(skewed_corpus):
    with pytest.raises(CorpusError, match="no shards for language\\(s\\) xx; the corpus has big, mid, small"):
        plan_sample(skewed_corpus, ["big", "xx"], 0.3, 10)


def test_empty_language(tmp_path):
    write_shard(tmp_path, "en", ["some text here"])
    write_shard(tmp_path, "fr", ["", "  "])
    with pytest.raises(CorpusError, match="language\\(s\\) fr have no text"):
        plan_sample(tmp_path, [], 0.3, 10, progress=False)


def test_shard_without_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "en").mkdir()
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "en" / "part-00000.parquet")
    with pytest.raises(CorpusError, match="no 'text' column"):
        plan_sample(tmp_path, [], 0.3, 10, progress=False)
