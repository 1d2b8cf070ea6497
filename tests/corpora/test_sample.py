"""The bundled sample (corpora/sample) against its answer key, PLANTED.json."""

import json

import pandas as pd
import pytest

from mdeberta.corpora.settings import CorpusSettings
from mdeberta.corpora.stage import CorpusStage
from tests.conftest import SAMPLE

PLANTED = json.loads((SAMPLE / "PLANTED.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sample_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    settings = CorpusSettings(inputs=[str(SAMPLE)], langs=["xnli"], lid_thresholds={"sw": 0.3}, workers=1)
    assert CorpusStage(settings, out, progress=False).run() == 0
    docs = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("*/part-*.parquet")))
    docs["file_lang"] = docs.source.str.extract(r"(\w\w)\.txt$", expand=False)
    docs["index"] = docs.id.str.split("#").str[1].astype(int)
    return out, docs.set_index(["file_lang", "index"]), pd.read_csv(out / "stats.csv")


def test_foreign_documents_are_routed_to_their_language(sample_output):
    _, docs, _ = sample_output
    for lang, key in PLANTED.items():
        for foreign in key["foreign_documents"]:
            assert docs.loc[(lang, foreign["index"]), "lang"] == foreign["lang"]


def test_clean_documents_keep_their_language(sample_output):
    _, docs, _ = sample_output
    for lang, key in PLANTED.items():
        for index in key["clean_documents"]:
            if (lang, index) in docs.index:
                assert docs.loc[(lang, index), "lang"] == lang


def test_planted_problems_are_removed_and_counted(sample_output):
    _, docs, stats = sample_output
    by_reason = stats.groupby("reason")[["documents", "paragraphs"]].sum()
    assert by_reason.loc["duplicate_document", "documents"] == sum(k["duplicate_documents"] for k in PLANTED.values())
    assert by_reason.loc["doc_lorem_ipsum", "documents"] == sum(k["lorem_ipsum_documents"] for k in PLANTED.values())
    all_text = "\n".join(docs.text)
    for lang, key in PLANTED.items():
        assert all_text.count(key["repeated_paragraph"]) == 1, lang
        assert (lang, key["junk_only_index"]) not in docs.index
        assert (lang, key["lorem_ipsum_index"]) not in docs.index
        for later in (pair[1] for pair in key["duplicate_pairs"]):
            assert (lang, later) not in docs.index
    for junk in ("Home | Contact", "★★★★★", "#4471", "JavaScript", "\u200b", "\t", "  "):
        assert junk not in all_text
