"""What later stages rely on in a corpus folder: refused when unfinished; each language's share of a
multilingual draw."""

import json

import pytest

from mdeberta.cli import main
from mdeberta.corpora.contract import UnfinishedCorpusError, language_shares, require_finished_corpus


def unfinished_corpus(folder, failed_shard: bool):
    """What a corpus run leaves: settings.json at its start; a failed shard also leaves stats.json
    (failed_shards) and no manifest; a killed run leaves _work/ and neither."""
    (folder / "en").mkdir(parents=True)
    (folder / "settings.json").write_text("{}")
    if failed_shard:
        (folder / "stats.json").write_text(json.dumps({"failed_shards": {"broken.txt.xz": "truncated"}}))
    else:
        (folder / "_work" / "clean").mkdir(parents=True)
    return folder


@pytest.mark.parametrize("failed_shard, why", [(True, "1 input shard(s) failed, e.g. broken.txt.xz"),
                                               (False, "its run did not finish")])
def test_an_unfinished_corpus_is_refused_by_every_later_stage_in_one_line(tmp_path, capsys, failed_shard, why):
    corpus = unfinished_corpus(tmp_path / "corpus", failed_shard)
    with pytest.raises(UnfinishedCorpusError, match="rerun `mdeberta corpus prepare`"):
        require_finished_corpus(corpus)
    for argv in (["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "tok")],
                 ["pretrain", "run", "--corpus", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--out",
                  str(tmp_path / "pre"), "--size", "tiny"]):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert f"is an unfinished corpus ({why}" in error and error.count("\n") == 1, error
    assert not (tmp_path / "tok").exists() and not (tmp_path / "pre").exists()


def test_a_finished_corpus_and_a_users_own_folder_are_taken(tmp_path):
    finished = unfinished_corpus(tmp_path / "finished", failed_shard=False)
    (finished / "manifest.json").write_text("{}")
    own = tmp_path / "own" / "en"
    own.mkdir(parents=True)  # per-language Parquet made elsewhere: no trace of the corpus stage
    for folder in (finished, own.parent):
        require_finished_corpus(folder)


def test_shares_follow_the_exponent():
    p, q = language_shares({"a": 900, "b": 90, "c": 10}, 0.3)
    assert p == pytest.approx({"a": 0.9, "b": 0.09, "c": 0.01})
    weights = {k: v ** 0.3 for k, v in p.items()}
    assert q == pytest.approx({k: w / sum(weights.values()) for k, w in weights.items()})
    assert language_shares({"a": 900, "b": 100}, 1.0)[1] == pytest.approx({"a": 0.9, "b": 0.1})
    assert language_shares({"a": 900, "b": 100}, 0.0)[1] == pytest.approx({"a": 0.5, "b": 0.5})
