"""The stage as a whole: its files, reruns, clear errors, the report and the command line."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import pytest

from mdeberta.cli import main
from mdeberta.stage import Status
from mdeberta.tokenizer.settings import TokenizerSettings
from mdeberta.tokenizer.stage import OUTPUTS, TokenizerStage
from mdeberta.tokenizer.train import MemoryLimitError, VocabularyTooLargeError
from tests.tokenizer.conftest import VOCAB


def test_outputs(trained):
    assert {p.name for p in trained.iterdir()} == {*OUTPUTS, "manifest.json", "settings.json"}
    stats = json.loads((trained / "sample_stats.json").read_text())
    assert stats["pieces"] == VOCAB and stats["mask_id"] == VOCAB
    assert len(stats["languages"]) == 15
    # 4,000 lines were asked of a corpus of 992: the sample holds each line, none of the whole corpus twice
    assert stats["lines"] == sum(s["quota"] for s in stats["languages"].values()) < 4000
    assert all(s["quota"] >= s["lines_available"] for s in stats["languages"].values())
    assert stats["sampled"].startswith(f"sampling {stats['lines']:,} lines (corpus has 992 < --sentences 4,000: "
                                       "capped where more would repeat the whole corpus")
    assert sum(s["q"] for s in stats["languages"].values()) == pytest.approx(1.0)
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["stage"] == "tokenizer" and manifest["outputs"]["pieces"] == VOCAB
    report = json.loads((trained / "report.json").read_text())
    rows = {row["lang"]: row for row in next(iter(report["tokenizers"].values()))}
    assert rows["zh"]["unit"] == "character" and rows["en"]["unit"] == "word"
    assert all(rows[lang]["unknown_rate"] == 0 for lang in stats["languages"])
    assert 1 < rows["en"]["fertility"] < 6


def test_model_card(trained):
    card = (trained / "README.md").read_text()
    for expected in ("1,500 pieces", "`[MASK]` = 1500", "AutoTokenizer.from_pretrained", "| sw ", "fertility",
                     "spm.SentencePieceProcessor"):
        assert expected in card
    assert "{" not in card.split("```")[0], "every template field is filled"


def test_rerun_is_skipped(trained, sample_corpus, capsys):
    before = (trained / "spm.model").stat().st_mtime_ns
    settings = TokenizerSettings(vocab_size=VOCAB, sentences=4000, report_lines=100, threads=1)
    assert TokenizerStage(settings, sample_corpus, trained, progress=False).run() == 0
    assert "up to date" in capsys.readouterr().err
    assert (trained / "spm.model").stat().st_mtime_ns == before


def test_vocabulary_too_large(sample_corpus, tmp_path):
    settings = TokenizerSettings(vocab_size=60_000, sentences=500, report_lines=10, langs=["en", "fr"])
    with pytest.raises(VocabularyTooLargeError, match=r"--vocab-size 60,000 is more than this sample supports: "
                                                      r"at most [\d,]+ pieces"):
        TokenizerStage(settings, sample_corpus, tmp_path, progress=False).run()
    assert not (tmp_path / "manifest.json").exists() and not (tmp_path / "spm.model").exists()


def test_allow_smaller_vocab(sample_corpus, tmp_path, capsys):
    settings = TokenizerSettings(vocab_size=60_000, sentences=500, report_lines=10, langs=["en", "fr"],
                                 allow_smaller_vocab=True)
    assert TokenizerStage(settings, sample_corpus, tmp_path, progress=False, echo=lambda _: None).run() == 0
    stats = json.loads((tmp_path / "sample_stats.json").read_text())
    assert 300 < stats["pieces"] < 60_000
    assert f"supports only {stats['pieces']:,} pieces" in capsys.readouterr().err


def test_memory_refusal_names_a_sample_that_fits(sample_corpus, tmp_path):
    settings = TokenizerSettings(sentences=10_000_000, max_memory=0.295)  # just above the trainer's fixed part
    stage = TokenizerStage(settings, sample_corpus, tmp_path, progress=False)
    with pytest.raises(MemoryLimitError, match=r"needs about [\d.]+ GiB, more than the 0.3 GiB of --max-memory; "
                                               r"use --sentences [\d,]+ or fewer") as refused:
        stage.run()
    planned, fits = (int(n.replace(",", "")) for n in
                     re.search(r"training on ([\d,]+) lines .* use --sentences ([\d,]+)", str(refused.value)).groups())
    assert planned == stage.plan.lines < settings.sentences, "the capped sample is what is checked"
    assert 0 < fits < planned


def test_cli_train_and_report(sample_corpus, trained, tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(sample_corpus), "--out", str(out), "--vocab-size", "800",
                 "--sentences", "1500", "--langs", "en,de,sw", "--report-lines", "20", "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "800 pieces + [MASK] = 800" in printed.out
    assert re.search(r"^tokenizer: sampling [\d,]+ lines \(corpus has 202 < --sentences 1,500: capped where more "
                     r"would repeat the whole corpus; per-language shares alpha=0.3: \w\w drawn once, the others "
                     r"repeated up to [\d.]+x\)$", printed.err, re.MULTILINE)
    assert main(["tokenizer", "report", "--tokenizer", str(out), "--corpus", str(sample_corpus),
                 "--compare", str(trained), "--langs", "en,sw", "--lines", "30", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "fertility (tok)" in printed and f"fertility ({trained.name})" in printed
    assert "| sw " in printed and "| fr " not in printed
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert list(report["tokenizers"]) == [str(out), str(trained)]


def test_recipe_section(sample_corpus, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[tokenizer]\nvocab_size = 700\nsentences = 800\nlangs = ["en"]\nreport_lines = 5\n')
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--recipe", str(recipe), "--corpus", str(sample_corpus), "--out", str(out),
                 "--alpha", "0.5", "--no-progress"]) == 0
    saved = json.loads((out / "settings.json").read_text())
    assert saved["vocab_size"] == 700 and saved["alpha"] == 0.5 and saved["langs"] == ["en"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--corpus", "{tmp}/missing", "--out", "{tmp}/o"], "corpus not found: {tmp}/missing"),
    (["train", "--corpus", "{corpus}", "--out", "{tmp}/o", "--langs", "en,xx"], "no shards for language(s) xx"),
    (["train", "--corpus", "{corpus}", "--out", "{tmp}/o", "--normalization", "nfc"], None),
    (["train", "--corpus", "{corpus}", "--out", "{tmp}/o", "--vocab-size", "many"], "'vocab_size' must be int"),
    (["train", "--corpus", "{corpus}", "--out", "{tmp}/o", "--vocab-size", "600", "--sentences", "300"],
     "--vocab-size 600 is too small for this sample"),
    (["report", "--tokenizer", "{tmp}/none", "--corpus", "{corpus}"], "tokenizer folder not found: {tmp}/none"),
])
def test_bad_input_is_one_clear_line(sample_corpus, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, corpus=sample_corpus) for a in argv]
    if message is None:  # argparse rejects the choice itself
        with pytest.raises(SystemExit):
            main(["tokenizer", *argv])
        assert "invalid choice: 'nfc'" in capsys.readouterr().err
        return
    assert main(["tokenizer", *argv]) == 2
    *logged, err = capsys.readouterr().err.strip().splitlines()
    assert message.format(tmp=tmp_path) in err and err.startswith("mdeberta: error:")
    assert all(line.startswith("tokenizer: sampling ") for line in logged), "the stage's own log, no traceback"


def test_interrupted_output_is_not_taken_for_finished(trained, sample_corpus, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "manifest.json").unlink()
    settings = TokenizerSettings(vocab_size=VOCAB, sentences=4000, report_lines=100)
    stage = TokenizerStage(settings, sample_corpus, copy, progress=False, echo=lambda _: None)
    from mdeberta.manifest import is_complete
    assert not is_complete(copy, stage.inputs, stage.output_settings)


def test_the_status_comes_from_the_manifest_the_corpus_and_the_settings(trained, sample_corpus, tmp_path):
    settings = TokenizerSettings(vocab_size=VOCAB, sentences=4000, report_lines=100)
    assert TokenizerStage(settings, sample_corpus, trained).status() is Status.FINISHED
    assert TokenizerStage(replace(settings, alpha=0.5), sample_corpus, trained).status() is Status.STALE
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "manifest.json").unlink()
    assert TokenizerStage(settings, sample_corpus, copy).status() is Status.ABSENT  # a rerun starts over
