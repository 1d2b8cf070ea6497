"""What a run says before and during its first steps (the plan, the pace), and a stop requested in
the middle of a step: it comes at the next micro-batch, keeps the last completed step, and the run
resumes from it bit-exactly, on one process or two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mdeberta.cli import main
from mdeberta.distributed import World
from mdeberta.model.rtd import RTDModel
from mdeberta.plan import Pace, format_plan
from mdeberta.pretrain.checkpoint import checkpoints, latest_checkpoint
from mdeberta.pretrain.train import Pretrainer

from .test_train import REPO, SETTINGS, train, weights


def embedding_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.deberta.embeddings.parameters())


@pytest.mark.parametrize("processes, micro_batches", [(1, 2), (2, 1)])
def test_the_plan_has_the_figures_of_the_settings(tokens, tokenizer, tmp_path, processes, micro_batches):
    settings = replace(SETTINGS, batch_size=16, micro_batch_size=8, max_seq_length=64, max_steps=40)
    pretrainer = Pretrainer(settings, tokens, tokenizer, tmp_path, World(size=processes), progress=False)
    plan = pretrainer.plan(done=10)
    assert plan.tokens_per_step == 16 * 64 and plan.total == 16 * 40 and plan.steps == 40 and plan.done == 10
    assert (plan.micro_batch, plan.micro_batches, plan.processes) == (8, micro_batches, processes)
    assert plan.out == tmp_path
    for name in ("generator", "discriminator"):
        model = getattr(pretrainer.model, name)
        assert plan.models[name].parameters == sum(p.numel() for p in model.parameters())
        assert plan.models[name].embeddings == embedding_parameters(model) > 0
    # GDES: the discriminator's own table is E_delta, the size of E_G
    assert plan.models["discriminator"].embeddings >= pretrainer.model.generator.deberta.embeddings.word_embeddings.weight.numel()
    text = format_plan(plan, "pretrain")
    assert "16 sequences x 64 tokens = 1.02k tokens" in text and "40 steps, 640 sequences = 41k tokens" in text
    assert f"{micro_batches} micro-batch" in text and "resuming after step 10: 30 to go" in text and str(tmp_path) in text


def test_the_plan_and_the_pace_are_told_once(tokens, tokenizer, tmp_path, capsys):
    assert train(tokens, tokenizer, tmp_path, max_steps=4) == 0
    err = capsys.readouterr().err
    assert err.count("pretrain: plan") == 1 and "4 sequences x 32 tokens = 128 tokens" in err
    assert len([line for line in err.splitlines() if " a step (1 step after the first); 2 steps left" in line]) == 1


def test_the_pace_waits_for_a_second_step_unless_the_first_takes_a_minute():
    fast = Pace(done=0, steps=40)
    assert fast.step_done(3.0) is None  # the first step: start-up costs
    told = fast.step_done(0.4)
    assert told.startswith("0.4 s a step (1 step after the first); 38 steps left: about 15 s, until ")
    assert fast.step_done(0.4) is None
    slow = Pace(done=10, steps=50)
    told = slow.step_done(498.0)
    assert told.startswith("8 min 18 s a step (the first step, start-up included); 39 steps left: about 5 h 24 min")


def signal_in_micro_batch(monkeypatch, half: str, call: int, signum=signal.SIGTERM, times: int = 1) -> None:
    """Sends ``signum`` during the ``call``-th micro-batch (counted from 1) of the generator's half
    ("generate") or the discriminator's ("discriminate"), as a Ctrl-C in the middle of a step."""
    original = getattr(RTDModel, half)
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RTDModel, half, counted)


def training_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "training_state.pt", weights_only=True)


def assert_same_state(ours, theirs, path="") -> None:
    if isinstance(ours, torch.Tensor):
        assert torch.equal(ours, theirs), path
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), path
        for key in ours:
            assert_same_state(ours[key], theirs[key], f"{path}/{key}")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), path
        for index, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_state(a, b, f"{path}/{index}")
    else:
        assert ours == theirs, path


# 4 micro-batches a step (batch 8 of 2). Step 3 runs the 9th to 12th micro-batch of each half.
@pytest.mark.parametrize("update, half, call", [("joint", "generate", 10), ("decoupled", "generate", 10),
                                                ("decoupled", "discriminate", 11)])
def test_a_stop_in_the_middle_of_a_step_keeps_the_step_before_and_resumes_exactly(
        tokens, tokenizer, tmp_path, monkeypatch, capsys, update, half, call):
    """In the discriminator's half the generator has already stepped: that update is undone."""
    common = dict(batch_size=8, micro_batch_size=2, max_steps=5, update=update, checkpoint_every=1)
    assert train(tokens, tokenizer, tmp_path / "straight", **common) == 0
    with monkeypatch.context() as patch:
        signal_in_micro_batch(patch, half, call)
        assert train(tokens, tokenizer, tmp_path / "stopped", **common) == 143
    err = capsys.readouterr().err
    assert "SIGTERM received: stopping after this micro-batch; saving step 2" in err
    assert "stopped at step 2; checkpoint saved" in err
    assert [step for step, _ in checkpoints(tmp_path / "stopped/checkpoints")] == [1, 2]
    stopped, straight = tmp_path / "stopped/checkpoints/step-2", tmp_path / "straight/checkpoints/step-2"
    assert_same_state(weights(stopped), weights(straight))
    assert_same_state(training_state(stopped), training_state(straight))  # optimizers, schedules, RNG states
    assert (stopped / "data_state.json").read_text() == (straight / "data_state.json").read_text()
    assert train(tokens, tokenizer, tmp_path / "stopped", **common) == 0
    assert_same_state(weights(tmp_path / "stopped/checkpoints/step-5"), weights(tmp_path / "straight/checkpoints/step-5"))


def test_a_stop_during_the_first_step_has_nothing_to_save(tokens, tokenizer, tmp_path, capsys, monkeypatch):
    signal_in_micro_batch(monkeypatch, "generate", 1, signal.SIGINT)
    assert train(tokens, tokenizer, tmp_path, max_steps=3) == 130
    assert "SIGINT received: stopping after this micro-batch; no step to save yet" in capsys.readouterr().err
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def test_a_second_ctrl_c_in_a_step_stops_at_once_without_saving(tokens, tokenizer, tmp_path, capsys, monkeypatch):
    signal_in_micro_batch(monkeypatch, "discriminate", 3, signal.SIGINT, times=2)  # step 2 of 2 micro-batches
    with pytest.raises(KeyboardInterrupt):
        train(tokens, tokenizer, tmp_path, max_steps=3, checkpoint_every=1)
    assert "a second Ctrl-C: stopping now, without saving (the latest checkpoint: step-1)" in capsys.readouterr().err
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-1"


# The run the tests below start in a subprocess (under torchrun or not): from the second step on,
# each micro-batch of each half sleeps, so that a step takes seconds. PIDS gets each process' id.
SLOWED_RUN = """
import os, sys, time
from pathlib import Path
from mdeberta.model.rtd import RTDModel
from mdeberta.cli import main

Path(os.environ["PIDS"], os.environ.get("RANK", "0")).write_text(str(os.getpid()))
calls, MICRO_BATCHES = [], int(os.environ["MICRO_BATCHES"])

def slowed(run):
    def slow(self, *args):
        calls.append(1)
        if len(calls) > 2 * MICRO_BATCHES:
            time.sleep(float(os.environ["SLEEP"]))
        return run(self, *args)
    return slow

RTDModel.generate, RTDModel.discriminate = slowed(RTDModel.generate), slowed(RTDModel.discriminate)
sys.exit(main(sys.argv[1:]))
"""
STOP_WITHIN_S = 6.0  # the rest of the interrupted step would take 16 x 2 x 0.5 s = 16 s, less the 0.5 s waited


def cli_arguments(corpus: Path, tokenizer: Path, out: Path, batch: int) -> list[str]:
    return ["pretrain", "run", "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
            "--size", "tiny", "--batch-size", str(batch), "--micro-batch-size", "1", "--max-seq-length", "32",
            "--max-steps", "3", "--warmup-steps", "2", "--learning-rate", "1e-3", "--eval-every", "0",
            "--checkpoint-every", "1", "--validation-fraction", "0.2", "--tokenize-workers", "1", "--no-progress"]


def start_slowed(launch: list[str], arguments: list[str], aside: Path, micro_batches: int) -> subprocess.Popen:
    """``aside``: a folder for the script and the process ids."""
    (aside / "pids").mkdir(parents=True)
    (aside / "slowed_run.py").write_text(SLOWED_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PIDS": str(aside / "pids"),
           "MICRO_BATCHES": str(micro_batches), "SLEEP": "0.5"}
    return subprocess.Popen(launch + [str(aside / "slowed_run.py"), *arguments], env=env, cwd=REPO,
                            stderr=subprocess.PIPE, text=True)


def with_tokens(out: Path, tokens: Path) -> Path:
    """A run folder whose token streams are up to date: not tokenized again."""
    out.mkdir()
    os.symlink(tokens, out / "tokens")
    return out


def signal_in_step_2(process: subprocess.Popen, out: Path, pid: Path, signum) -> float:
    """Waits for the checkpoint of step 1, then signals ``pid``'s process half a second into step 2;
    returns how long the run took to exit from then."""
    deadline = time.monotonic() + 240
    while not (out / "checkpoints/step-1").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(int(pid.read_text()), signum)
    signalled = time.monotonic()
    process.wait(timeout=60)
    return time.monotonic() - signalled


@pytest.fixture
def one_thread():
    """As the subprocess (OMP_NUM_THREADS=1): sums in another order would differ in the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ctrl_c_in_a_long_step_exits_within_seconds_and_resumes_exactly(tokens, tokenizer, corpus_dir, tmp_path,
                                                                        one_thread):
    """A step of 16 micro-batches of one sequence, each half of each sleeping 0.5 s: 16 s. The run is
    resumed and compared in this process."""
    stopped = with_tokens(tmp_path / "stopped", tokens)
    process = start_slowed([sys.executable], cli_arguments(corpus_dir, tokenizer, stopped, 16), tmp_path / "aside", 16)
    took = signal_in_step_2(process, stopped, tmp_path / "aside/pids/0", signal.SIGINT)
    err = process.stderr.read()
    assert process.returncode == 130, err[-2000:]
    assert took < STOP_WITHIN_S, f"{took:.1f} s from Ctrl-C to exit"
    assert "pretrain: plan" in err and "SIGINT received: stopping after this micro-batch; saving step 1" in err
    assert [step for step, _ in checkpoints(stopped / "checkpoints")] == [1]
    assert json.loads((stopped / "checkpoints/step-1/data_state.json").read_text())["batches"] == 1
    assert main(cli_arguments(corpus_dir, tokenizer, stopped, 16)) == 0
    straight = with_tokens(tmp_path / "straight", tokens)
    assert main(cli_arguments(corpus_dir, tokenizer, straight, 16)) == 0
    assert_same_state(weights(stopped / "checkpoints/step-3"), weights(straight / "checkpoints/step-3"))


def test_under_torchrun_a_signal_to_one_process_stops_both_at_the_same_micro_batch(tokens, tokenizer, corpus_dir,
                                                                                 tmp_path):
    """SIGTERM reaches process 1 alone: process 0 learns of it from the vote between micro-batches,
    saves step 1 and both exit; a disagreement would leave one waiting in a collective (timeout)."""
    out = with_tokens(tmp_path / "two", tokens)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    process = start_slowed(launch, cli_arguments(corpus_dir, tokenizer, out, 32), tmp_path / "aside", 16)
    took = signal_in_step_2(process, out, tmp_path / "aside/pids/1", signal.SIGTERM)
    err = process.stderr.read()
    assert "stopped at step 1; checkpoint saved" in err, err[-3000:]
    assert took < STOP_WITHIN_S, f"{took:.1f} s from SIGTERM to exit"
    assert [step for step, _ in checkpoints(out / "checkpoints")] == [1]
    assert json.loads((out / "checkpoints/step-1/data_state.json").read_text())["batches"] == 1
