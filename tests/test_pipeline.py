"""`mdeberta pipeline`: every recipe validates; the demo chain from a clean workdir, stopped during
pretraining (SIGTERM, or SIGKILL after a checkpoint) and run again, ends with every stage's outputs
and the XNLI report; a third run skips every stage; --force redoes a stage and what follows it, in
the same command or, after --until, in the next one (old pretraining runs set aside); refusals:
--force outside --from/--until, changed [pretrain] settings, an unfinished torchrun run, torchrun
itself; the Slurm examples parse, and the XNLI job runs the recipe's settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from mdeberta.cli import main
from mdeberta.errors import UserError
from mdeberta.pipeline import STAGES, Pipeline
from mdeberta.pretrain.checkpoint import checkpoint_fingerprint
from mdeberta.recipe import Recipe
from mdeberta.xnli.stage import model_fingerprint

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))

# The demo recipe with a smaller model and fewer steps: the whole chain in well under a minute.
SMALL_CHAIN = """
[pretrain]
size = "tiny"
max_seq_length = 64
batch_size = 4
micro_batch_size = 4
max_steps = 24
warmup_steps = 2
learning_rate = 2e-3
validation_fraction = 0.05
log_every = 4
eval_every = 0
eval_sequences = 8
checkpoint_every = 1000
tokenize_workers = 1

[xnli]
epochs = 1
batch_size = 4
eval_every = 10
max_length = 64
"""


def small_recipe(folder: Path, pipeline: str = "", **pretrain) -> Path:
    """demo.toml's [corpus] and [tokenizer] with absolute paths, a tiny [pretrain] (with the keys
    given in ``pretrain`` replaced) and [xnli]."""
    demo = (ROOT / "recipes" / "demo.toml").read_text(encoding="utf-8")
    head = demo[:demo.index("[pretrain]")].replace('"corpora/sample"', json.dumps(str(ROOT / "corpora/sample")))
    chain = SMALL_CHAIN
    for key, value in pretrain.items():  # the first such key is [pretrain]'s: it comes before [xnli]
        chain = re.sub(rf"^{key} = .*$", f"{key} = {value}", chain, count=1, flags=re.MULTILINE)
    recipe = folder / "small.toml"
    recipe.write_text(head + chain + "\n[pipeline]\n"
                      + f"xnli_data = {json.dumps(str(ROOT / 'eval/sample'))}\n" + pipeline, encoding="utf-8")
    return recipe


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def pipeline_command(recipe: Path, workdir: Path) -> list[str]:
    """The pipeline in a process of its own, as a user starts it (to be stopped by a signal)."""
    return [sys.executable, "-m", "mdeberta", "pipeline", str(recipe), "--workdir", str(workdir), "--no-progress"]


def copy_corpus_and_tokenizer(chain: dict, workdir: Path) -> None:
    for stage in ("corpus", "tokenizer"):
        shutil.copytree(chain["workdir"] / stage, workdir / stage)


def statuses(workdir: Path) -> dict[str, str]:
    return {s["label"]: s["status"] for s in json.loads((workdir / "pipeline.json").read_text())["stages"]}


def manifest_times(workdir: Path) -> dict[str, int]:
    return {stage: (workdir / stage / "manifest.json").stat().st_mtime_ns for stage in ("corpus", "tokenizer")}


def run_in_process(*argv: str) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared machine: more threads only wait on each other
    try:
        return main(["pipeline", *map(str, argv), "--no-progress"])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads_into_all_stage_settings(path):
    recipe = Recipe.load(path)
    assert recipe.sharings and recipe.xnli_settings


def test_the_paper_scale_recipe_says_what_the_paper_did():
    recipe = Recipe.load(ROOT / "recipes" / "mdeberta-v3-base.toml")
    assert recipe.corpus.langs == ["cc100"]
    assert recipe.tokenizer.vocab_size == 250_000
    assert (recipe.pretrain.size, recipe.pretrain.batch_size, recipe.pretrain.max_seq_length,
            recipe.pretrain.max_steps, recipe.pretrain.sharing) == ("base", 8192, 512, 500_000, "gdes")
    assert recipe.xnli_settings == ["zero-shot", "translate-train-all"]
    assert recipe.pipeline.xnli_data == "facebook/xnli"


def test_the_ablation_recipe_runs_each_sharing_in_its_own_folders(tmp_path):
    pipeline = Pipeline(ROOT / "recipes" / "gdes-ablation.toml", tmp_path)
    folders = [step.folder.name for step in pipeline.steps]
    assert folders[:2] == ["corpus", "tokenizer"]
    for sharing in ("es", "nes", "gdes"):
        assert {f"pretrain-{sharing}", f"model-{sharing}", f"xnli-{sharing}"} <= set(folders)


@pytest.mark.parametrize("text, message", [
    ("[pretrian]\nsize = 'tiny'\n", "unknown section(s) pretrian"),
    ("[pipeline]\nsharing = ['gdes', 'shared']\n", "shared not one of"),
    ("[pretrain]\nmax_step = 3\n", "did you mean 'max_steps'"),
    # values of the wrong type were converted silently (16.5 -> 16, true -> 1, "200" -> 200)
    ("[pretrain]\nbatch_size = 16.5\n", "[pretrain]: 'batch_size' must be int, got 16.5"),
    ("[pretrain]\nbatch_size = true\n", "[pretrain]: 'batch_size' must be int, got True"),
    ("[pretrain]\nmax_steps = \"200\"\n", "[pretrain]: 'max_steps' must be int, got '200'"),
    ("[corpus]\nlid_threshold = \"0.5\"\n", "[corpus]: 'lid_threshold' must be float, got '0.5'"),
    ("[tokenizer]\nvocab_size = 3000.0\n", "[tokenizer]: 'vocab_size' must be int, got 3000.0"),
])
def test_a_bad_recipe_is_one_line_naming_the_problem(tmp_path, capsys, text, message):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text, encoding="utf-8")
    assert main(["pipeline", str(recipe), "--workdir", str(tmp_path / "work")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "work").exists()


def test_an_empty_stage_range_and_an_unfinished_earlier_stage_are_refused(tmp_path):
    recipe = small_recipe(tmp_path)
    with pytest.raises(UserError, match="comes after"):
        Pipeline(recipe, tmp_path / "work", first="xnli", last="corpus")
    with pytest.raises(UserError, match="corpus is not finished"):
        Pipeline(recipe, tmp_path / "work", first="pretrain").run()

@pytest.mark.parametrize("first, last, force", [("corpus", "tokenizer", "pretrain"), ("export", "xnli", "corpus")])
def test_forcing_a_stage_outside_the_range_is_one_line(tmp_path, capsys, first, last, force):
    argv = ["pipeline", str(small_recipe(tmp_path)), "--workdir", str(tmp_path / "work"), "--from", first,
            "--until", last, "--force", force]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--force {force}: not among the stages this run does" in error
    assert not (tmp_path / "work").exists()



def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A clean workdir; the first run is stopped by SIGTERM once pretraining logs; the second finishes."""
    folder = tmp_path_factory.mktemp("pipeline")
    recipe, workdir = small_recipe(folder), folder / "work"
    command = pipeline_command(recipe, workdir)
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(workdir / "pretrain" / "metrics.jsonl", first)
    first.send_signal(signal.SIGTERM)
    first_log = first.communicate(timeout=120)[0]
    first_statuses, first_times = statuses(workdir), manifest_times(workdir)
    second = subprocess.run(command, check=False, env=ENV, capture_output=True, text=True, timeout=300)
    return {"recipe": recipe, "workdir": workdir, "first": (first.returncode, first_log, first_statuses, first_times),
            "second": second}


def test_a_run_stopped_during_pretraining_continues_without_redoing_corpus_and_tokenizer(chain):
    workdir = chain["workdir"]
    returncode, log, first, times = chain["first"]
    assert returncode == 143, log[-2000:]
    assert first == {"corpus": "done", "tokenizer": "done", "pretrain": "stopped (exit 143)", "export": "not run",
                     "xnli": "not run"}
    second = chain["second"]
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert statuses(workdir) == {"corpus": "skipped", "tokenizer": "skipped", "pretrain": "resumed",
                                 "export": "done", "xnli": "done"}
    assert manifest_times(workdir) == times
    assert "resuming from" in second.stderr
    assert f"XNLI report: {workdir / 'xnli' / 'results.md'}" in second.stdout


def test_a_run_killed_hard_after_a_checkpoint_continues_from_it(chain, tmp_path, capsys):
    """SIGKILL: no handler runs and nothing is saved on the way out (perhaps half a checkpoint
    folder); the rerun continues from the last whole checkpoint."""
    workdir = tmp_path / "work"
    copy_corpus_and_tokenizer(chain, workdir)
    recipe = small_recipe(tmp_path, max_steps=96, checkpoint_every=4)
    first = subprocess.Popen(pipeline_command(recipe, workdir), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_for(workdir / "pretrain" / "checkpoints" / "step-4", first)
    first.kill()
    assert first.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    assert run_in_process(recipe, "--workdir", workdir) == 0
    assert statuses(workdir) == {"corpus": "skipped", "tokenizer": "skipped", "pretrain": "resumed", "export": "done",
                                 "xnli": "done"}
    assert "pretrain: resuming from" in capsys.readouterr().err
    assert (workdir / "xnli" / "results.md").is_file()


def test_a_run_stopped_before_its_first_checkpoint_starts_over_and_says_so(chain, tmp_path):
    workdir = tmp_path / "work"
    copy_corpus_and_tokenizer(chain, workdir)
    (workdir / "pretrain").mkdir()
    (workdir / "pretrain" / "settings.json").write_text("{}")  # written before the first step
    assert run_in_process(chain["recipe"], "--workdir", workdir, "--until", "pretrain") == 0
    assert statuses(workdir)["pretrain"] == "done"


def test_an_unfinished_torchrun_pretraining_is_not_continued_in_one_process(chain, tmp_path, capsys):
    workdir = tmp_path / "work"
    copy_corpus_and_tokenizer(chain, workdir)
    shutil.copytree(chain["workdir"] / "pretrain", workdir / "pretrain")
    (workdir / "pretrain" / "manifest.json").unlink()
    state_path = workdir / "pretrain" / "checkpoints" / "step-24" / "training_state.pt"
    state = torch.load(state_path, weights_only=True)
    torch.save({**state, "world_size": 2}, state_path)  # as a run under torchrun records it
    recipe = small_recipe(tmp_path, max_steps=48)
    assert main(["pipeline", str(recipe), "--workdir", str(workdir), "--until", "export", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "trained by 2 processes" in error and "torchrun --nproc_per_node=N -m mdeberta pretrain run" in error
    metrics = [folder / "pretrain" / "metrics.jsonl" for folder in (workdir, chain["workdir"])]
    assert metrics[0].read_text() == metrics[1].read_text()  # not a step trained


def test_a_changed_pretrain_setting_stops_with_the_pipelines_advice(chain, tmp_path, capsys):
    workdir = tmp_path / "work"
    copy_corpus_and_tokenizer(chain, workdir)
    shutil.copytree(chain["workdir"] / "pretrain", workdir / "pretrain")
    recipe = small_recipe(tmp_path, learning_rate=1e-3)
    assert main(["pipeline", str(recipe), "--workdir", str(workdir), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "learning_rate: 0.002 -> 0.001" in error and "--force pretrain" in error and "--out" not in error


def test_every_stage_writes_its_outputs(chain):
    workdir = chain["workdir"]
    assert chain["second"].returncode == 0
    assert len(list((workdir / "corpus").glob("*/part-*.parquet"))) >= 15
    for stage in ("corpus", "tokenizer", "pretrain", "xnli/zero-shot"):
        assert (workdir / stage / "manifest.json").is_file(), stage
    assert (workdir / "corpus" / "stats.json").is_file()
    stats = pd.read_csv(workdir / "corpus" / "stats.csv")
    assert {"lang", "step", "reason", "documents"} <= set(stats.columns) and "en" in set(stats.lang)
    assert {"spm.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "report.md"} <= \
        {p.name for p in (workdir / "tokenizer").iterdir()}
    checkpoint = workdir / "pretrain" / "checkpoints" / "step-24"
    assert (checkpoint / "model.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (workdir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 24 and steps == sorted(steps)
    for model in ("discriminator", "generator"):
        files = {p.name for p in (workdir / "model" / model).iterdir()}
        assert {"config.json", "model.safetensors", "spm.model"} <= files
    export = json.loads((workdir / "model" / "export.json").read_text())
    assert export["fingerprint"] == checkpoint_fingerprint(checkpoint) and export["sharing"] == "gdes"
    run = workdir / "xnli" / "zero-shot"
    predictions = run / "predictions" / "zero-shot" / "seed-1"
    assert (predictions / "run.json").is_file()
    for split in ("dev", "test"):
        assert {p.stem for p in (predictions / split).glob("*.csv")} >= {"en", "sw", "zh"}
    assert {"config.json", "model.safetensors"} <= {p.name for p in (run / "zero-shot" / "seed-1" / "best").iterdir()}
    results = pd.read_csv(workdir / "xnli" / "results.csv")
    assert set(results.setting) == {"zero-shot"} and "sw" in results.columns
    assert (workdir / "xnli" / "results.md").is_file() and (workdir / "xnli" / "xnli.png").is_file()


def test_a_rerun_skips_every_stage(chain):
    workdir = chain["workdir"]
    assert chain["second"].returncode == 0
    before = manifest_times(workdir)
    assert run_in_process(chain["recipe"], "--workdir", workdir) == 0
    assert set(statuses(workdir).values()) == {"skipped"}
    assert manifest_times(workdir) == before


def test_forcing_a_stage_redoes_the_stages_after_it(chain, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(chain["workdir"], workdir)
    report = (workdir / "xnli" / "results.md").stat().st_mtime_ns
    assert run_in_process(chain["recipe"], "--workdir", workdir, "--from", "export", "--force", "export") == 0
    assert statuses(workdir) == {"corpus": "not run", "tokenizer": "not run", "pretrain": "not run",
                                 "export": "done", "xnli": "done"}
    assert (workdir / "xnli" / "results.md").stat().st_mtime_ns != report


@pytest.mark.parametrize("stage, until", [("corpus", "tokenizer"), ("pretrain", "pretrain")])
def test_a_stage_redone_by_an_earlier_command_makes_the_next_redo_what_follows(chain, tmp_path, stage, until):
    """`--force STAGE --until ...`, then a full run: the later stages are redone from the new outputs
    (not skipped because their inputs keep their names), and the old pretraining run is set aside."""
    workdir = tmp_path / "work"
    shutil.copytree(chain["workdir"], workdir)
    assert run_in_process(chain["recipe"], "--workdir", workdir, "--force", stage, "--until", until) == 0
    earlier, ran = STAGES[:STAGES.index(stage)], STAGES[STAGES.index(stage):STAGES.index(until) + 1]
    assert statuses(workdir) == {name: "skipped" if name in earlier else "done" if name in ran else "not run"
                                 for name in STAGES}
    assert run_in_process(chain["recipe"], "--workdir", workdir) == 0
    later = STAGES[STAGES.index(until) + 1:]
    assert statuses(workdir) == {name: "done" if name in later else "skipped" for name in STAGES}
    assert len(list(workdir.glob("pretrain.replaced-*"))) == 1
    checkpoint, discriminator = workdir / "pretrain/checkpoints/step-24", workdir / "model/discriminator"
    export = json.loads((workdir / "model" / "export.json").read_text())
    assert export["fingerprint"] == checkpoint_fingerprint(checkpoint)
    xnli = json.loads((workdir / "xnli" / "zero-shot" / "manifest.json").read_text())
    assert xnli["inputs"][0]["model"] == model_fingerprint(str(discriminator))
    made = [workdir / "corpus/manifest.json", checkpoint / "model.safetensors", discriminator / "model.safetensors",
            workdir / "xnli/zero-shot/manifest.json", workdir / "xnli/results.md"]
    times = [path.stat().st_mtime_ns for path in made]
    assert times == sorted(times)  # each made after what it was made from


def test_forcing_the_tokenizer_redoes_what_follows_and_sets_the_old_pretraining_aside(chain, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(chain["workdir"], workdir)
    old = checkpoint_fingerprint(workdir / "pretrain" / "checkpoints" / "step-24")
    assert run_in_process(chain["recipe"], "--workdir", workdir, "--force", "tokenizer") == 0
    assert statuses(workdir) == {"corpus": "skipped", **{name: "done" for name in STAGES[1:]}}
    [aside] = workdir.glob("pretrain.replaced-*")
    assert checkpoint_fingerprint(aside / "checkpoints" / "step-24") == old  # moved whole, not rewritten
    assert checkpoint_fingerprint(workdir / "pretrain" / "checkpoints" / "step-24") != old


def test_the_ablation_compares_es_nes_gdes_on_one_corpus_and_tokenizer(chain, tmp_path):
    workdir = tmp_path / "work"
    for stage in ("corpus", "tokenizer"):
        shutil.copytree(chain["workdir"] / stage, workdir / stage)
    recipe = small_recipe(tmp_path, 'sharing = ["es", "nes", "gdes"]\n')
    assert run_in_process(recipe, "--workdir", workdir) == 0
    done = statuses(workdir)
    assert done["corpus"] == done["tokenizer"] == "skipped"
    assert {done[f"{stage} ({s})"] for stage in ("pretrain", "export", "xnli") for s in ("es", "nes", "gdes")} == {"done"}
    table = pd.read_csv(workdir / "ablation.csv").set_index("sharing")
    assert list(table.index) == ["es", "nes", "gdes"]
    assert (table.step == 24).all() and table.rtd_accuracy.between(0, 1).all() and (table.mlm_loss > 0).all()
    assert table.cos_E_delta.notna().tolist() == [False, False, True]  # E_delta exists under GDES only
    assert table.cos_E_D.notna().tolist() == [False, True, True]  # under ES, E_D is E_G
    assert table["xnli_zero-shot"].notna().all()
    report = (workdir / "ablation.md").read_text()
    assert "cos_E_delta" in report and "![pretraining curves of es, nes, gdes](ablation.png)" in report
    assert (workdir / "ablation.png").read_bytes().startswith(b"\x89PNG")


def test_under_torchrun_the_pipeline_points_to_the_stage_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="runs in one process: under torchrun, start the pretrain and xnli stages"):
        Pipeline(small_recipe(tmp_path), tmp_path / "work")


@pytest.mark.parametrize("script", sorted((ROOT / "examples" / "slurm").glob("*.sh")), ids=lambda p: p.name)
def test_slurm_examples_parse(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_xnli_job_runs_the_recipes_settings_on_its_data(tmp_path):
    """examples/slurm/xnli.sh with torchrun and mdeberta replaced by stubs that log their arguments."""
    stubs, calls = tmp_path / "bin", tmp_path / "calls"
    stubs.mkdir()
    for name in ("torchrun", "mdeberta"):
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        (stubs / name).chmod(0o755)
    env = {**ENV, "PATH": f"{stubs}:{Path(sys.executable).parent}:{os.environ['PATH']}", "RUN": "run",
           "RECIPE": "recipes/mdeberta-v3-base.toml"}
    subprocess.run(["bash", "examples/slurm/xnli.sh"], env=env, cwd=ROOT, check=True, timeout=120)
    torchrun = [line for line in calls.read_text().splitlines() if line.startswith("torchrun")]
    assert [line.split("--setting ")[1].split()[0] for line in torchrun] == ["zero-shot", "translate-train-all"]
    assert all("--data facebook/xnli " in line for line in torchrun)
    assert calls.read_text().splitlines()[-1] == \
        "mdeberta xnli report run/xnli/zero-shot run/xnli/translate-train-all --out run/xnli"


def test_stage_names_are_checked(tmp_path):
    with pytest.raises(SystemExit):
        main(["pipeline", str(small_recipe(tmp_path)), "--force", "tokeniser"])
