"""Every stage, run as users run it (the CLI, in its own process), killed with SIGKILL at several
points and rerun, ends with the same outputs as an uninterrupted run; and on a full or read-only
disk it stops with one line naming the file, leaving nothing half-written under a final name."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE

EVAL_SAMPLE = ROOT / "eval" / "sample"
TIMEOUT = 300


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mdeberta.cli", *map(str, args)]


STAGES = {
    "corpus": lambda up, out: cli("corpus", "prepare", SAMPLE, "--langs", "xnli", "--lid-thresholds", "sw=0.3",
                                  "--workers", "2", "--batch-size", "8", "--out", out, "--no-progress"),
    "tokenizer": lambda up, out: cli("tokenizer", "train", "--corpus", up["corpus"], "--vocab-size", "2000",
                                     "--sentences", "5000", "--threads", "1", "--out", out, "--no-progress"),
    "pretrain": lambda up, out: cli("pretrain", "run", "--corpus", up["corpus"], "--tokenizer", up["tokenizer"],
                                    "--size", "tiny", "--max-seq-length", "64", "--batch-size", "8",
                                    "--micro-batch-size", "4", "--max-steps", "12", "--warmup-steps", "2",
                                    "--checkpoint-every", "3", "--log-every", "3", "--eval-every", "6",
                                    "--eval-sequences", "8", "--tokenize-workers", "2", "--out", out, "--no-progress"),
    "export": lambda up, out: cli("pretrain", "export", "--checkpoint", up["pretrain"] / "checkpoints" / "step-12",
                                  "--out", out),
    "xnli": lambda up, out: cli("xnli", "run", "--model", up["export"] / "discriminator", "--data", EVAL_SAMPLE,
                                "--recipe", ROOT / "recipes" / "demo.toml", "--epochs", "4", "--eval-every", "4",
                                "--out", out, "--no-progress"),
}


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def kill_when(command: list[str], out: Path, pattern: str) -> bool:
    """Starts the stage and kills it (SIGKILL, its process alone: its workers must follow) as soon as
    a file matching ``pattern`` appears under ``out``. False when the run ended first."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        if next(out.glob(pattern), None) is not None:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    stderr = process.communicate(timeout=TIMEOUT)[1].decode()
    assert "Traceback" not in stderr, stderr  # the workers of a killed run exit quietly
    return process.returncode == -signal.SIGKILL


def tensor_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def comparable(stage: str, out: Path) -> dict[str, str]:
    """The outputs that an interrupted run must reproduce bit for bit (times and logs aside)."""
    files = tensor_files(out)
    keep = {
        "corpus": lambda name: name.endswith((".parquet", "stats.json", "stats.csv")),
        "tokenizer": lambda name: name in ("spm.model", "tokenizer.json", "sample_stats.json"),
        "pretrain": lambda name: name.startswith("checkpoints/step-12/") and name.endswith(
            ("model.safetensors", "data_state.json")) or name.startswith("tokens/") and "_shards" not in name,
        "export": lambda name: name.endswith(("safetensors", "config.json", "spm.model")),
        "xnli": lambda name: name.startswith("predictions/") and name.endswith(".csv")
        or name.endswith("best/model.safetensors"),
    }[stage]
    kept = {name: digest for name, digest in files.items() if keep(name)}
    assert kept, f"{stage}: no outputs to compare in {out}"
    return kept


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """Every stage run once, uninterrupted, each on the outputs of the one before."""
    root = tmp_path_factory.mktemp("reference")
    outputs: dict[str, Path] = {}
    for stage, command in STAGES.items():
        outputs[stage] = root / stage
        finished = run(command(outputs, outputs[stage]))
        assert finished.returncode == 0, finished.stderr[-3000:]
    return outputs


# Points of each stage's run, named by the first file that shows the run got there.
KILL_POINTS = {
    "corpus": ["_work/clean/shard-00004.parquet", "_work/keys/*.npy", "_work/dedup/*/task-*.json", "*/part-*.parquet"],
    "tokenizer": ["_work", "_work/spm.model", "tokenizer.json"],
    "pretrain": ["tokens/_shards/*/*.json", "checkpoints/step-*.tmp", "checkpoints/step-9"],
    "export": ["generator.tmp"],
    "xnli": ["zero-shot/seed-1/state.pt", "predictions/zero-shot/seed-1/test/*.csv"],
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_killed_at_any_point_finishes_as_if_never_interrupted(stage, reference, tmp_path):
    out = tmp_path / stage
    command = STAGES[stage](reference, out)
    missed = [point for point in KILL_POINTS[stage] if not kill_when(command, out, point)]
    assert not missed, f"{stage}: the run ended before reaching {missed}"
    finished = run(command)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert comparable(stage, out) == comparable(stage, reference[stage])
    assert not list(out.rglob("*.tmp*")), "a finished run leaves no temporary files"


def _mount_allowed() -> bool:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _mount_allowed(), reason="this machine does not allow a private tmpfs "
                                 "(unshare --user --mount); tests/pretrain and tests/test_storage.py inject the errors")


LEFTOVER = "temporary files left:"


def on_small_disk(command: list[str], mount: Path, options: str) -> subprocess.CompletedProcess:
    """``command`` with ``mount`` a fresh tmpfs of its own (``options``: size, ro), seen by it alone;
    then the temporary files left on it, printed after LEFTOVER (the disk goes with the command)."""
    mount.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o {options} tmpfs {mount} && {{ \"$@\"; status=$?; echo {LEFTOVER}; find {mount} -name '*.tmp*'; exit $status; }}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *command],
                           cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})


# A size for each stage's output disk at which its run cannot finish.
TOO_SMALL = {"corpus": "100k", "tokenizer": "100k", "pretrain": "1m", "export": "600k", "xnli": "2m"}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("mdeberta: error", "Traceback"))
            or "Error:" in line]


@needs_mount
@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_full_disk_is_one_line_naming_the_file_and_the_room_needed(stage, reference, tmp_path):
    mount = tmp_path / "disk"
    failed = on_small_disk(STAGES[stage](reference, mount / "out"), mount, f"size={TOO_SMALL[stage]}")
    assert failed.returncode == 2, failed.stderr[-3000:]
    (line,) = _error_lines(failed.stderr)
    assert line.startswith(f"mdeberta: error: cannot write {mount / 'out'}"), line
    assert "No space left on device" in line and "needed" in line and "free there" in line, line
    assert failed.stdout.split(LEFTOVER)[-1].split() == [], "a temporary file is left"


@needs_mount
@pytest.mark.parametrize("stage", ["corpus", "pretrain"])
def test_a_read_only_disk_is_one_line(stage, reference, tmp_path):
    mount = tmp_path / "disk"
    failed = on_small_disk(STAGES[stage](reference, mount / "out"), mount, "ro,size=64k")
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert _error_lines(failed.stderr) == [f"mdeberta: error: cannot write {mount / 'out'}: Read-only file system; "
                                           "choose an output folder on a writable disk"]
