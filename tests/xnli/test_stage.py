"""The stage end to end on CPU with a tiny model: both settings, the report, the saved checkpoint
in transformers, resume after a kill, reruns and bad input."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest
import torch

from mdeberta.cli import main
from mdeberta.corpora.languages import XNLI_LANGUAGES
from mdeberta.xnli import train as train_module
from mdeberta.xnli.settings import XnliSettings
from mdeberta.xnli.stage import XnliRun

QUICK = ["--epochs", "1", "--batch-size", "8", "--eval-every", "2", "--warmup", "0.2", "--lr", "1e-3",
         "--no-progress"]


def run_cli(*args) -> int:
    return main(["xnli", "run", *map(str, args), *QUICK])


@pytest.fixture(scope="module")
def zero_shot(tiny_model, releases, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero-shot")
    assert run_cli("--model", tiny_model, "--data", releases, "--out", out, "--max-train-examples", 20) == 0
    return out


@pytest.fixture(scope="module")
def translate_train_all(tiny_model, saved, tmp_path_factory):
    out = tmp_path_factory.mktemp("tta")
    assert run_cli("--model", tiny_model, "--data", saved, "--out", out, "--setting", "translate-train-all",
                   "--max-train-examples", 2, "--seeds", 3, 4) == 0
    return out


def assert_selected(run_dir, setting: str, seed: int, languages: list[str]) -> None:
    """Every evaluation's score is the mean dev accuracy over ``languages``; the kept step is the
    first of the highest scores, and its checkpoint's saved dev predictions give that entry's
    accuracies (so best/ is the checkpoint that was evaluated there)."""
    folder = run_dir / "predictions" / setting / f"seed-{seed}"
    info = json.loads((folder / "run.json").read_text())
    for entry in info["history"]:
        assert list(entry["dev"]) == languages
        assert entry["score"] == pytest.approx(sum(entry["dev"].values()) / len(languages))
    scores = [entry["score"] for entry in info["history"]]
    best = info["history"][scores.index(max(scores))]
    assert (info["best_step"], info["best_score"]) == (best["step"], best["score"])
    for lang, value in best["dev"].items():
        table = pd.read_csv(folder / "dev" / f"{lang}.csv")
        assert (table.label == table.prediction).mean() == pytest.approx(value)


def test_zero_shot_outputs(zero_shot):
    info = json.loads((zero_shot / "predictions" / "zero-shot" / "seed-1" / "run.json").read_text())
    assert info["train_pairs"] == 20 and info["steps"] == 3  # 20 English pairs, batches of 8
    assert [e["step"] for e in info["history"]] == [2, 3]
    assert_selected(zero_shot, "zero-shot", 1, ["en"])
    for split, size in (("dev", 6), ("test", 9)):
        for lang in XNLI_LANGUAGES:
            assert len(pd.read_csv(zero_shot / "predictions" / "zero-shot" / "seed-1" / split / f"{lang}.csv")) == size
    assert not (zero_shot / "zero-shot" / "seed-1" / "state.pt").exists()
    results = pd.read_csv(zero_shot / "results.csv")
    assert list(results.columns) == ["row", "model", "setting", "seed", *XNLI_LANGUAGES, "avg", "interval",
                                     *(f"{c}_ci95_{end}" for c in [*XNLI_LANGUAGES, "avg"] for end in ("low", "high"))]
    assert set(results.row) == {"run", "mean", "std", "published", "delta"}
    assert set(results[results.row == "published"].model) == {"mDeBERTaV3 base", "XLM-R base"}
    run = next(r for r in json.loads((zero_shot / "results.json").read_text())["test"] if r["row"] == "run")
    assert run["pairs"] == dict.fromkeys(XNLI_LANGUAGES, 9) and set(run["ci95"]) == {*XNLI_LANGUAGES, "avg"}
    assert (zero_shot / "xnli.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((zero_shot / "manifest.json").read_text())["stage"] == "xnli"


def test_translate_train_all_selects_on_every_language(translate_train_all):
    for seed in (3, 4):
        info = json.loads((translate_train_all / "predictions" / "translate-train-all" / f"seed-{seed}" /
                           "run.json").read_text())
        assert info["train_pairs"] == 30
        assert_selected(translate_train_all, "translate-train-all", seed, list(XNLI_LANGUAGES))
    results = pd.read_csv(translate_train_all / "results.csv")
    assert sorted(results[results.row == "run"].seed.astype(int)) == [3, 4]


def test_report_merges_runs(zero_shot, translate_train_all, tmp_path, capsys):
    assert main(["xnli", "report", str(zero_shot), str(translate_train_all), "--out", str(tmp_path)]) == 0
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results.setting) == {"zero-shot", "translate-train-all"}
    assert len(results[results.row == "published"]) == 4 and "| mean" in capsys.readouterr().out


def test_checkpoint_loads_in_transformers(zero_shot, tiny_model):
    import transformers

    from mdeberta.xnli.stage import load_classifier, load_tokenizer

    best = zero_shot / "zero-shot" / "seed-1" / "best"
    theirs = transformers.DebertaV2ForSequenceClassification.from_pretrained(best).eval()
    ours = load_classifier(str(best)).eval()
    assert theirs.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    tokenizer = load_tokenizer(str(best))
    batch = tokenizer(["Die Stadtbibliothek ist mittwochs offen.", "A cat."], ["Sie ist offen.", "A dog sleeps."],
                      padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        expected, got = theirs(**batch).logits, ours(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert expected.argmax(-1).tolist() == got.argmax(-1).tolist()


def test_killed_run_resumes_to_the_same_result(zero_shot, tiny_model, releases, tmp_path, monkeypatch):
    settings = XnliSettings(epochs=1, batch_size=8, eval_every=2, warmup=0.2, lr=1e-3, max_train_examples=20)
    save = train_module._save_atomic

    def killed_after_saving(obj, path):
        save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_atomic", killed_after_saving)
    with pytest.raises(KeyboardInterrupt):
        XnliRun(settings, str(tiny_model), str(releases), tmp_path, progress=False).run()
    assert torch.load(tmp_path / "zero-shot" / "seed-1" / "state.pt", weights_only=False)["step"] == 2
    assert not XnliRun(settings, str(tiny_model), str(releases), tmp_path).made_from_other_inputs()
    monkeypatch.setattr(train_module, "_save_atomic", save)
    assert XnliRun(settings, str(tiny_model), str(releases), tmp_path, progress=False).run() == 0

    def outcome(run_dir):
        info = json.loads((run_dir / "predictions" / "zero-shot" / "seed-1" / "run.json").read_text())
        test = {lang: pd.read_csv(run_dir / "predictions" / "zero-shot" / "seed-1" / "test" / f"{lang}.csv")
                for lang in XNLI_LANGUAGES}
        return info["history"], info["best_step"], {k: v.prediction.tolist() for k, v in test.items()}

    assert outcome(tmp_path) == outcome(zero_shot)


def test_best_checkpoint_agrees_with_the_state_after_any_kill(tiny_model, releases, tmp_path, monkeypatch):
    """Killed after step 3's evaluation wrote its weights as the new best but before the state
    recording it: the rerun resumes from step 2, so best/ must still hold step 2's weights."""
    from mdeberta.xnli.stage import load_classifier

    settings = XnliSettings(epochs=1, batch_size=8, eval_every=2, warmup=0.2, lr=1e-3, max_train_examples=20)
    workdir = tmp_path / "zero-shot" / "seed-1"
    save = train_module._save_atomic
    saved_states = []

    def rising_scores(scores):
        return lambda *args, **kwargs: (score := next(scores), {"en": score})

    def killed_before_the_second_state(obj, path):
        if saved_states:
            raise KeyboardInterrupt
        saved_states.append(obj)
        save(obj, path)

    def weights_of(folder):
        return load_classifier(str(folder)).state_dict()

    monkeypatch.setattr(train_module, "selection_score", rising_scores(iter([0.5, 0.6])))
    monkeypatch.setattr(train_module, "_save_atomic", killed_before_the_second_state)
    with pytest.raises(KeyboardInterrupt):
        XnliRun(settings, str(tiny_model), str(releases), tmp_path, progress=False).run()
    state = torch.load(workdir / "state.pt", weights_only=False)
    assert state["step"] == 2 and state["selection"].best_step == 2
    best = weights_of(workdir / "best")
    for name, value in state["model"].items():
        torch.testing.assert_close(best[name], value, rtol=0, atol=0, msg=name)
    assert (workdir / "best.step-3").is_dir()  # step 3's weights, not yet the recorded best

    def recording(obj, path):
        saved_states.append(obj)
        save(obj, path)

    monkeypatch.setattr(train_module, "selection_score", rising_scores(iter([0.6])))
    monkeypatch.setattr(train_module, "_save_atomic", recording)
    assert XnliRun(settings, str(tiny_model), str(releases), tmp_path, progress=False).run() == 0
    info = json.loads((tmp_path / "predictions" / "zero-shot" / "seed-1" / "run.json").read_text())
    assert info["best_step"] == 3 and sorted(p.name for p in workdir.iterdir()) == ["best"]
    best = weights_of(workdir / "best")
    for name, value in saved_states[-1]["model"].items():  # the state of step 3
        torch.testing.assert_close(best[name], value, rtol=0, atol=0, msg=name)


def test_evaluation_progress_in_pairs_per_second(tiny_model, releases, capsys):
    from mdeberta.distributed import World
    from mdeberta.xnli.batching import encode
    from mdeberta.xnli.data import open_source, read_split
    from mdeberta.xnli.stage import load_classifier, load_tokenizer

    tokenizer, model = load_tokenizer(str(tiny_model)), load_classifier(str(tiny_model))
    dev = {lang: encode(tokenizer, read_split(open_source(str(releases)), "dev", lang), 64) for lang in ("en", "fr")}
    shown, _ = train_module.selection_score(model, dev, 4, World(), tokenizer.pad_token_id, progress=True)
    shown_err = capsys.readouterr().err
    assert "dev:" in shown_err and "pairs/s" in shown_err
    quiet, _ = train_module.selection_score(model, dev, 4, World(), tokenizer.pad_token_id, progress=False)
    assert capsys.readouterr().err == "" and quiet == shown


def test_a_run_knows_its_model_by_content_not_by_name(zero_shot, tiny_model, releases, tmp_path, monkeypatch):
    """Named another way, or copied with its times, the model is the same one; rewritten weights (a
    re-export) make another, and the pipeline redoes a run made from it."""
    out, model = tmp_path / "run", tmp_path / "model"
    shutil.copytree(zero_shot, out)
    shutil.copytree(tiny_model, model)
    settings = XnliSettings(epochs=1, batch_size=8, eval_every=2, warmup=0.2, lr=1e-3, max_train_examples=20)
    monkeypatch.chdir(tiny_model.parent)
    for name in (tiny_model.name, f"./{tiny_model.name}", str(model)):
        assert not XnliRun(settings, name, str(releases), out).made_from_other_inputs(), name
    os.utime(model / "model.safetensors")  # as a re-export rewrites it
    assert XnliRun(settings, str(model), str(releases), out).made_from_other_inputs()


def test_finished_run_is_not_redone(zero_shot, tiny_model, releases, capsys):
    before = (zero_shot / "manifest.json").stat().st_mtime
    assert run_cli("--model", tiny_model, "--data", releases, "--out", zero_shot, "--max-train-examples", 20) == 0
    assert "up to date" in capsys.readouterr().err
    assert (zero_shot / "manifest.json").stat().st_mtime == before
    # other settings into the same folder: the finished seed is not passed off as theirs
    assert run_cli("--model", tiny_model, "--data", releases, "--out", zero_shot, "--max-train-examples", 12) == 2
    assert "seed 1 was finished with another model, data or settings" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/nowhere"], "not a folder holding XNLI-1.0"),
    (["--model", "{tmp}/no-model"], "--model {tmp}/no-model: "),
    (["--languages", "en,xx"], "languages: xx not in XNLI"),
    (["--setting", "translate-train-all", "--languages", "fr,yo"], "languages: yo not in XNLI"),
    (["--data", "{partial}"], "multinli.train.en.tsv; it does not exist"),
    (["--model", "{weights_only}"], "put the tokenizer files"),
])
def test_bad_input_is_one_line(args, message, tiny_model, releases, tmp_path, capsys):
    weights_only = tmp_path / "weights-only"  # a model folder without its tokenizer files
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (weights_only / name).write_bytes((tiny_model / name).read_bytes())
    partial = tmp_path / "partial"
    (partial / "XNLI-1.0").mkdir(parents=True)
    for name in ("xnli.dev.tsv", "xnli.test.tsv"):
        (partial / "XNLI-1.0" / name).write_bytes((releases / "XNLI-1.0" / name).read_bytes())
    given = dict(zip(args[::2], args[1::2]))
    full = {"--model": str(tiny_model), "--data": str(releases), "--out": str(tmp_path / "out"), **given}
    places = {"tmp": tmp_path, "partial": partial, "weights_only": weights_only}
    flat = [str(v).format(**places) for kv in full.items() for v in kv]
    assert run_cli(*flat) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mdeberta: error: ") and message.format(tmp=tmp_path) in err[-1]


def test_loading_an_encoder_says_in_one_line_which_head_is_new(tiny_model, capsys, caplog):
    """transformers' multi-line load report (a warning for a head that is always new) is replaced
    by one line on stderr."""
    from mdeberta.xnli.stage import load_classifier

    load_classifier(str(tiny_model))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xnli: loaded")]
    assert lines == [f"xnli: loaded {tiny_model}; newly initialised: classifier, pooler (4 tensors)"]
    assert not [record for record in caplog.records if "LOAD REPORT" in record.getMessage()]
