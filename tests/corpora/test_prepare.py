import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mdeberta.corpora.prepare import Preparation
from mdeberta.corpora.settings import CorpusSettings
from mdeberta.corpora.stage import CorpusStage
from mdeberta.stage import Status
from tests.conftest import SENTENCES, write_cc100


def run(inputs, out, **settings):
    settings.setdefault("workers", 1)
    stage = CorpusStage(CorpusSettings(inputs=[str(p) for p in inputs], **settings), out, progress=False)
    return stage, stage.run()


def read_output(out):
    frames = [pd.read_parquet(p) for p in sorted(out.glob("*/part-*.parquet"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def test_writes_per_language_shards_stats_and_manifest(small_corpus, tmp_path):
    out = tmp_path / "out"
    _, status = run([small_corpus], out)
    assert status == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["de", "en", "fr"]
    table = pq.read_table(next(out.glob("en/part-*.parquet")))
    assert table.schema.names == ["id", "text", "lang", "lang_score", "source"]
    docs = read_output(out)
    assert set(docs.lang) == {"de", "en", "fr"} and (docs.lang_score >= 0.5).all()
    assert docs.source.str.endswith(".txt").all() and docs.id.is_unique
    stats = json.loads((out / "stats.json").read_text())
    assert {"languages", "reasons", "rows", "notes", "failed_shards"} <= set(stats)
    csv = pd.read_csv(out / "stats.csv")
    assert list(csv.columns) == ["lang", "step", "reason", "documents", "paragraphs", "characters"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "corpus" and len(manifest["inputs"]) == 6
    assert json.loads((out / "settings.json").read_text())["lid_threshold"] == 0.5
    assert not (out / "_work").exists()


def test_duplicates_are_removed_across_files_and_counted(small_corpus, tmp_path):
    out = tmp_path / "out"
    run([small_corpus], out)
    docs = read_output(out)
    for lang, sentences in SENTENCES.items():
        paragraphs = [p for text in docs[docs.lang == lang].text for p in text.split("\n")]
        assert paragraphs.count(sentences[0]) == 1 and paragraphs.count(sentences[1]) == 1
    stats = pd.read_csv(out / "stats.csv").set_index(["lang", "reason"])
    for lang in SENTENCES:
        # file 2 repeats file 1's first document whole
        assert stats.loc[(lang, "duplicate_document"), "documents"] == 1
        assert stats.loc[(lang, "duplicate_paragraph"), "paragraphs"] >= 2


def test_every_paragraph_is_kept_or_counted_once(small_corpus, tmp_path):
    out = tmp_path / "out"
    write_cc100(small_corpus / "junk.txt", [["Home | Contact", "★★★ 12.05.2023 ★★★"], ["lorem ipsum dolor sit amet " * 3]])
    run([small_corpus], out)
    stats = pd.read_csv(out / "stats.csv")
    total_paragraphs = sum(text.count("\n") + 1 for f in small_corpus.iterdir()
                           for text in f.read_text().strip().split("\n\n"))
    total_documents = sum(len(f.read_text().strip().split("\n\n")) for f in small_corpus.iterdir())
    assert stats.paragraphs.sum() == total_paragraphs
    assert stats.documents.sum() == total_documents
    kept = stats[stats.reason == "kept"]
    assert kept.documents.sum() == len(read_output(out))
    assert set(stats.reason) >= {"kept", "line_too_short", "line_few_letters", "doc_lorem_ipsum", "duplicate_document"}


def test_langs_allow_list_and_counts(small_corpus, tmp_path):
    out = tmp_path / "out"
    run([small_corpus], out, langs=["english", "de"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["de", "en"]
    stats = pd.read_csv(out / "stats.csv")
    assert stats[(stats.lang == "fr") & (stats.reason == "lang_not_selected")].documents.sum() == 5  # before dedup


def test_paragraph_level_routing_splits_mixed_documents(tmp_path):
    mixed = [SENTENCES["en"][0], SENTENCES["fr"][0], SENTENCES["en"][1], SENTENCES["de"][0] + " " + SENTENCES["de"][1]]
    write_cc100(tmp_path / "raw" / "mixed.txt", [mixed])
    out = tmp_path / "out"
    run([tmp_path / "raw"], out, lid_level="paragraph", min_doc_words=5)
    docs = read_output(out).set_index("lang")
    assert docs.loc["en", "text"] == SENTENCES["en"][0] + "\n" + SENTENCES["en"][1]
    assert docs.loc["fr", "text"] == SENTENCES["fr"][0]
    assert docs.loc["de", "id"].endswith("/de")


def test_export_text_is_cc100_format(small_corpus, tmp_path):
    out = tmp_path / "out"
    run([small_corpus], out, export_text=True)
    text = (out / "fr.txt").read_text(encoding="utf-8")
    documents = text.split("\n\n")
    assert documents[-1] == "" and len(documents) - 1 == len(read_output(out).query("lang == 'fr'"))


def test_rerun_is_skipped_and_changed_settings_redo(small_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    run([small_corpus], out)
    first = read_output(out)
    _, status = run([small_corpus], out)
    assert status == 0 and "up to date" in capsys.readouterr().err
    run([small_corpus], out, min_doc_words=30)
    assert len(read_output(out)) < len(first)


def test_workers_and_cluster_slices_give_the_same_output(small_corpus, tmp_path):
    run([small_corpus], tmp_path / "one")
    reference = read_output(tmp_path / "one")
    run([small_corpus], tmp_path / "pool", workers=2, batch_size=1)
    pd.testing.assert_frame_equal(read_output(tmp_path / "pool"), reference)

    settings = CorpusSettings(inputs=[str(small_corpus)], workers=1, dedup_tasks=3)
    for index in (1, 0, 2):  # slices finish in any order
        assert CorpusStage(settings, tmp_path / "sliced", progress=False).run(index, 3) == 0
    for task in (2, 0):  # task 1 is left to the merge
        assert CorpusStage(settings, tmp_path / "sliced", progress=False).run(dedup_task=task) == 0
    assert CorpusStage(settings, tmp_path / "sliced", progress=False).run(merge_only=True) == 0
    pd.testing.assert_frame_equal(read_output(tmp_path / "sliced"), reference)
    assert (tmp_path / "one" / "stats.csv").read_text() == (tmp_path / "sliced" / "stats.csv").read_text()


def output_files(out):
    """Every output file's bytes, but the manifest and settings (times, execution settings)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "settings.json")}


class Killed(BaseException):
    pass


def test_any_number_of_dedup_tasks_and_a_resumed_dedup_write_the_same_files(small_corpus, tmp_path, monkeypatch):
    from mdeberta.corpora import prepare

    outputs = {}
    for tasks in (1, 2, 4):
        assert run([small_corpus], tmp_path / f"tasks-{tasks}", dedup_tasks=tasks)[1] == 0
        outputs[tasks] = output_files(tmp_path / f"tasks-{tasks}")
    assert outputs[1] == outputs[2] == outputs[4] and any("part-" in name for name in outputs[1])

    ran, run_dedup_task = [], prepare._run_dedup_task

    def killed_in_task_2(job):
        ran.append(job.task)
        if job.task == 2 and ran == [0, 1, 2]:
            raise Killed  # a Ctrl-C or a killed job: finished tasks stay finished
        return run_dedup_task(job)

    monkeypatch.setattr(prepare, "_run_dedup_task", killed_in_task_2)
    with pytest.raises(Killed):
        run([small_corpus], tmp_path / "resumed", dedup_tasks=4)
    assert not list((tmp_path / "resumed").glob("*/part-*.parquet"))
    ran.clear()
    assert run([small_corpus], tmp_path / "resumed", dedup_tasks=4)[1] == 0
    assert ran == [2, 3]  # tasks 0 and 1 were not redone
    assert output_files(tmp_path / "resumed") == outputs[1]


def test_dedup_tasks_of_changed_inputs_are_redone(small_corpus, tmp_path):
    settings = CorpusSettings(inputs=[str(small_corpus)], workers=1, dedup_tasks=2)
    out = tmp_path / "out"
    for index in (0, 1):
        CorpusStage(settings, out, progress=False).run(index, 2)
    CorpusStage(settings, out, progress=False).run(dedup_task=0)
    write_cc100(small_corpus / "a-new-first-file.txt", [[SENTENCES["en"][0] + " Again and again here."]])
    # every shard index moves: the slices and the finished task no longer match these inputs
    for index in (0, 1):
        CorpusStage(settings, out, progress=False).run(index, 2)
    assert CorpusStage(settings, out, progress=False).run(merge_only=True) == 0
    reference = tmp_path / "reference"
    run([small_corpus], reference, dedup_tasks=2)
    assert output_files(out) == output_files(reference)


def test_merge_refuses_missing_slices(small_corpus, tmp_path):
    from mdeberta.corpora.prepare import StageError

    settings = CorpusSettings(inputs=[str(small_corpus)], workers=1)
    CorpusStage(settings, tmp_path / "out", progress=False).run(0, 2)
    with pytest.raises(StageError, match="3 shard\\(s\\) not cleaned yet"):
        CorpusStage(settings, tmp_path / "out", progress=False).run(merge_only=True)


def test_resume_keeps_finished_shards(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run([small_corpus], tmp_path / "reference")
    settings = CorpusSettings(inputs=[str(small_corpus)], workers=1)
    CorpusStage(settings, out, progress=False).run(0, 2)  # half the shards, then "interrupted"
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "_work" / "clean").glob("*.parquet")}
    assert len(finished) == 3

    cleaned = []
    original = Preparation._clean_shard

    def spy(self, shard, run):
        cleaned.append(shard.index)
        return original(self, shard, run)

    monkeypatch.setattr(Preparation, "_clean_shard", spy)
    assert CorpusStage(settings, out, progress=False).run() == 0
    assert cleaned == [1, 3, 5]
    pd.testing.assert_frame_equal(read_output(out), read_output(tmp_path / "reference"))


def test_the_status_comes_from_the_manifest_and_the_inputs(small_corpus, tmp_path):
    settings = CorpusSettings(inputs=[str(small_corpus)], workers=1)
    out = tmp_path / "out"
    assert CorpusStage(settings, out).status() is Status.ABSENT
    CorpusStage(settings, out, progress=False).run(0, 2)  # one slice of a cluster array
    assert CorpusStage(settings, out).status() is Status.PARTIAL
    assert CorpusStage(settings, out, progress=False).run() == 0
    assert CorpusStage(settings, out).status() is Status.FINISHED
    write_cc100(small_corpus / "zz-new.txt", [[SENTENCES["en"][0] + " Once more, later."]])
    assert CorpusStage(settings, out).status() is Status.STALE
    assert CorpusStage(settings, out).complete()  # what a later stage may still read


def test_damaged_shard_fails_alone(small_corpus, tmp_path, capsys):
    (small_corpus / "zz-broken.txt.xz").write_bytes(b"\xfd7zXZ\x00\x00 truncated")
    out = tmp_path / "out"
    _, status = run([small_corpus], out)
    assert status == 1
    report = capsys.readouterr().out
    assert "FAILED shard" in report and "zz-broken.txt.xz" in report and "1 of 7 shards failed" in report
    assert len(read_output(out).lang.unique()) == 3
    assert "zz-broken.txt.xz" in " ".join(json.loads((out / "stats.json").read_text())["failed_shards"])
    assert not (out / "manifest.json").exists()
    os.remove(small_corpus / "zz-broken.txt.xz")
    _, status = run([small_corpus], out)
    assert status == 0 and (out / "manifest.json").exists()


def test_empty_file_is_reported(small_corpus, tmp_path, capsys):
    (small_corpus / "empty.txt").write_text("")
    _, status = run([small_corpus], tmp_path / "out")
    assert status == 1 and "empty.txt: empty input, no documents in it" in capsys.readouterr().out


def test_changed_settings_leave_no_stale_language_folder(small_corpus, tmp_path):
    out = tmp_path / "out"
    run([small_corpus], out, export_text=True)
    assert (out / "fr.txt").exists()
    run([small_corpus], out, langs=["en"])
    assert set(read_output(out).lang) == {"en"} and not (out / "fr.txt").exists()
