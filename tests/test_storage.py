"""Refused writes, injected at the write call (tests/test_faults.py fills real disks where the
machine allows): one line naming the path and, for a full disk, the room needed; nothing
half-written left behind."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch

from mdeberta import storage
from mdeberta.cli import main
from mdeberta.errors import UserError
from mdeberta.pretrain import checkpoint as checkpoint_module
from mdeberta.pretrain.settings import PretrainSettings
from mdeberta.storage import WriteError, describe_write_failure, os_error_code, writing

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_the_system_error_is_found_in_the_chain_or_the_text():
    try:
        try:
            raise FULL
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534") from inner
    except RuntimeError as err:
        assert os_error_code(err) == errno.ENOSPC  # torch.save to a file object
    assert os_error_code(Exception("Error while serializing: I/O error: Read-only file system (os error 30)")) == 30
    assert os_error_code(RuntimeError("shapes do not match")) is None


def test_messages_name_the_path_the_room_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_free_bytes", lambda path: 4_096)
    assert describe_write_failure(tmp_path / "a.bin", errno.ENOSPC, 1_234_567) == (
        f"cannot write {tmp_path / 'a.bin'}: No space left on device (the write needed 1.23 MB, 4.1 KB free "
        "there); free some space or write elsewhere")
    assert describe_write_failure(tmp_path / "a", errno.EACCES) == (
        f"cannot write {tmp_path / 'a'}: Permission denied; check the folder's permissions or choose another "
        "output folder")
    assert "about 12 bytes" in describe_write_failure(tmp_path, errno.ENOSPC, 12, approximate=True)


def test_a_refused_write_removes_its_partial_file_and_other_errors_pass(tmp_path):
    partial = tmp_path / "x.tmp"
    with pytest.raises(WriteError, match=r"x.bin: No space left on device \(the write needed 10 bytes"):
        with writing(tmp_path / "x.bin", 10, partial=partial):
            partial.write_text("half")
            raise FULL
    assert not partial.exists()
    with pytest.raises(ValueError):  # a bug keeps its traceback
        with writing(tmp_path / "x.bin"):
            raise ValueError("not a write error")


def _tiny_checkpoint_arguments():
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    update = SimpleNamespace(name="model", optimizer=optimizer, scheduler=scheduler)
    return model, [update], PretrainSettings(size="tiny")


def test_a_checkpoint_the_disk_refuses_midway_is_removed_and_named(tmp_path, monkeypatch):
    model, updates, settings = _tiny_checkpoint_arguments()
    monkeypatch.setattr(checkpoint_module, "rtd_description", lambda model: {})

    def save_then_fill(obj, file):
        file.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from FULL

    monkeypatch.setattr(torch, "save", save_then_fill)
    root = tmp_path / "checkpoints"
    with pytest.raises(WriteError) as refused:
        checkpoint_module.save_checkpoint(root, checkpoint_module.Progress(3, {}), model=model, updates=updates,
                                          settings=settings, tokenizer=tmp_path, keep=2)
    assert str(refused.value).startswith(f"cannot write {root / 'step-3.tmp' / 'training_state.pt'}: No space left")
    assert "the write needed" in str(refused.value)
    assert list(root.iterdir()) == []  # neither step-3 nor step-3.tmp


def test_a_checkpoint_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
    model, updates, settings = _tiny_checkpoint_arguments()
    monkeypatch.setattr(storage, "_free_bytes", lambda path: 10)
    root = tmp_path / "checkpoints"
    with pytest.raises(WriteError, match=r"cannot write checkpoint step-3 in .*: No space left on device \(the "
                                         r"write needs [\d.]+ KB, 10 bytes free there\)"):
        checkpoint_module.save_checkpoint(root, checkpoint_module.Progress(3, {}), model=model, updates=updates,
                                          settings=settings, tokenizer=tmp_path, keep=2)
    assert list(root.iterdir()) == []


def test_a_corpus_part_the_system_refuses_is_one_cli_line_and_leaves_no_part(small_corpus, tmp_path, monkeypatch,
                                                                             capsys):
    original = pq.ParquetWriter.write_table

    def refuse_language_parts(self, table, *args, **kwargs):
        if "source" in table.column_names:  # the write phase's per-language parts
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return original(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", refuse_language_parts)
    out = tmp_path / "out"
    assert main(["corpus", "prepare", str(small_corpus), "--out", str(out), "--workers", "1", "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"mdeberta: error: cannot write {out}/") and line.endswith(
        ".parquet: Permission denied; check the folder's permissions or choose another output folder"), line
    assert not list(out.glob("*/part-*"))  # neither a part nor its temporary file


def test_only_refused_writes_are_reported_as_such(tmp_path):
    with pytest.raises(FileNotFoundError):  # e.g. an input that vanished: not the output's fault
        with writing(tmp_path / "x.bin"):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    with pytest.raises(UserError, match=r"^bad input: \[Errno 13\]"):  # already one line, kept as it is
        with writing(tmp_path / "x.bin"):
            raise UserError("bad input: [Errno 13] Permission denied")
