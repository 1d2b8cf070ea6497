"""Acceptance of the tokenizer stage on real text: the UDHR in the 15 XNLI languages (not shipped;
skipped when absent). Trains on 14 languages and reports fertility and unknown rate on all 15,
Thai (a script of its own) being the unseen one."""

from pathlib import Path

import pytest

from mdeberta.corpora.settings import CorpusSettings
from mdeberta.corpora.stage import CorpusStage
from mdeberta.tokenizer.report import draw_report_lines, fit_table, load_tokenizer, render_markdown
from mdeberta.tokenizer.settings import TokenizerSettings
from mdeberta.tokenizer.stage import TokenizerStage
from tests.conftest import UDHR

pytestmark = pytest.mark.skipif(not UDHR.is_dir(), reason=f"UDHR sample not found at {UDHR} (set MDEBERTA_UDHR)")

UNSEEN = "th"


def test_udhr_fertility_and_unknown_rate(tmp_path: Path):
    corpus = tmp_path / "corpus"
    settings = CorpusSettings(inputs=[str(UDHR)], langs=["xnli"], lid_thresholds={"sw": 0.3}, workers=1)
    assert CorpusStage(settings, corpus, progress=False, echo=lambda _: None).run() == 0
    languages = sorted(p.name for p in corpus.iterdir() if any(p.glob("part-*.parquet")))
    assert len(languages) == 15
    out = tmp_path / "tokenizer"
    trained_on = [lang for lang in languages if lang != UNSEEN]
    tok_settings = TokenizerSettings(langs=trained_on, vocab_size=4000, sentences=6000, allow_smaller_vocab=True)
    assert TokenizerStage(tok_settings, corpus, out, progress=False, echo=lambda _: None).run() == 0

    table = fit_table(load_tokenizer(out), draw_report_lines(corpus, languages, 1000, 0))
    print(f"\nUDHR, trained on {len(trained_on)} languages, {UNSEEN} unseen:\n" + render_markdown({str(out): table}))
    seen = table.drop(index=["all", UNSEEN])
    assert (table.drop(index="all").unknown_rate == 0).all(), "byte fallback: nothing becomes [UNK]"
    # Chinese has thousands of characters and 8 K of them in its UDHR: the rarest fall outside
    # --character-coverage and are spelled in bytes.
    assert (seen.drop(index="zh").byte_rate < 0.01).all() and seen.loc["zh", "byte_rate"] < 0.2
    assert table.loc[UNSEEN, "byte_rate"] > 0.5, "an unseen script is spelled in bytes"
    assert (seen[seen.unit == "word"].fertility < 3).all()
