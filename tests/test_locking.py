"""One run per output folder: a second run refuses at once, naming the process that holds it."""

import os
import signal
import subprocess
import sys

import pytest

from mdeberta.cli import main
from mdeberta.locking import FolderInUseError, folder_lock, output_lock

from .conftest import SAMPLE


def test_a_second_run_on_a_folder_in_use_refuses_naming_the_process(tmp_path, capsys):
    """Two `corpus prepare` on one --out raced: one died on the other's temporary files."""
    out = tmp_path / "out"
    with folder_lock(out):
        assert main(["corpus", "prepare", str(SAMPLE), "--out", str(out), "--no-progress"]) == 2
        error = capsys.readouterr().err
        assert f"is in use by another mdeberta run (process {os.getpid()})" in error and error.count("\n") == 1
        with pytest.raises(FolderInUseError):
            with folder_lock(out, shared=True):  # nor may a cluster array's job start beside it
                pass
    with folder_lock(out):  # released
        pass


def test_the_jobs_of_a_cluster_array_share_a_folder_that_no_other_run_may_take(tmp_path):
    with folder_lock(tmp_path, shared=True), folder_lock(tmp_path, shared=True):
        with pytest.raises(FolderInUseError):
            with folder_lock(tmp_path):
                pass


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mdeberta.locking import folder_lock\n"
                               f"with folder_lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUseError, match=f"process {holder.pid}"):
        with folder_lock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with folder_lock(tmp_path):
        pass


def test_under_torchrun_only_the_first_process_holds_the_lock(tmp_path, monkeypatch):
    with folder_lock(tmp_path):
        monkeypatch.setenv("RANK", "1")
        with output_lock(tmp_path):  # the run's other processes take none
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(FolderInUseError):
            with output_lock(tmp_path):
                pass
