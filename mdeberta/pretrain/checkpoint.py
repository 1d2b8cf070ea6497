"""Training checkpoints: everything a run needs to continue exactly, in one folder per step.

``<out>/checkpoints/step-N/``
    model.safetensors     the RTD model (generator, discriminator, E_delta under GDES)
    model.json            the two configs and the ids needed to rebuild it
    training_state.pt     optimizers and schedulers (one per update), step, skipped steps, RNG states,
                          number of processes
    data_state.json       the data position (batch number, per-language cursors and epochs)
    settings.json         the run's effective settings
    tokenizer/            the tokenizer files, so the folder exports on its own
    complete.json         written last: every other file's size and SHA-256

A checkpoint is written as ``step-N.tmp`` and renamed when complete: a folder named ``step-N``
is always whole, and ``complete.json`` tells whether it is still intact (a disk error or a
copy cut short can damage it later). The oldest are deleted beyond ``keep``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import safetensors.torch
import torch
from transformers import DebertaV2Config

from ..distributed import restore_rng_states, rng_states
from ..errors import UserError
from ..manifest import file_stamp, write_json_atomic
from ..storage import require_room, tensor_bytes, writing
from ..model import RTDModel

STEP_DIR = re.compile(r"^step-(\d+)$")
# the files of a checkpoint folder (see the module's docstring) ...
MODEL = "model.safetensors"
DESCRIPTION = "model.json"
TRAINING_STATE = "training_state.pt"
DATA_STATE = "data_state.json"
SETTINGS = "settings.json"
TOKENIZER = "tokenizer"
RECORD = "complete.json"
# ... and the keys of training_state.pt
STEP, SKIPPED_STEPS, WORLD_SIZE = "step", "skipped_steps", "world_size"
OPTIMIZERS, SCHEDULERS, RNG = "optimizers", "schedulers", "rng"
TOKENIZER_FILES = ("spm.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class CheckpointError(UserError):
    pass


def rtd_description(model: RTDModel) -> dict:
    """What ``build_rtd_model`` needs besides the weights."""
    return {"discriminator": model.discriminator.config.to_dict(), "generator": model.generator.config.to_dict(),
            "mask_token_id": model.mask_token_id, "sharing": model.sharing, "rtd_weight": model.rtd_weight,
            "mask_rate": model.mask_rate, "temperature": model.temperature,
            "special_token_ids": model.special_token_ids.tolist(), "unk_token_id": model.unk_token_id,
            "real_vocab_size": model.real_vocab_size,
            "enhanced_mask_decoder": model.generator.enhanced_mask_decoder}


def build_rtd_model(description: dict, attention: str = "auto") -> RTDModel:
    return RTDModel(DebertaV2Config(**description["discriminator"]), DebertaV2Config(**description["generator"]),
                    mask_token_id=description["mask_token_id"], sharing=description["sharing"],
                    rtd_weight=description["rtd_weight"], mask_rate=description["mask_rate"],
                    temperature=description["temperature"], special_token_ids=description["special_token_ids"],
                    unk_token_id=description.get("unk_token_id"), real_vocab_size=description["real_vocab_size"],
                    enhanced_mask_decoder=description["enhanced_mask_decoder"], attention=attention)


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in root.iterdir() if (m := STEP_DIR.match(path.name))]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = checkpoints(root)
    return found[-1][1] if found else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _record(folder: Path) -> dict:
    return {str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != RECORD}


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint folder against its ``complete.json`` (None: intact, or
    written before checkpoints carried the record)."""
    try:
        recorded = json.loads((checkpoint / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"{RECORD} is unreadable"
    for name, expected in recorded.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes where {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{name} differs from what was written (SHA-256)"
    return None


def require_intact(checkpoint: Path) -> Path:
    """The checkpoint, or a one-line error saying which file is damaged."""
    problem = damage(checkpoint)
    if problem:
        raise CheckpointError(f"{checkpoint} is damaged: {problem}; use another checkpoint of the run")
    return checkpoint


def latest_intact_checkpoint(root: Path, report=print) -> Path | None:
    """The newest checkpoint that is intact; each damaged one newer than it is reported in one
    line. None when there is none; an error when every checkpoint is damaged."""
    found = checkpoints(root)
    for _, path in reversed(found):
        problem = damage(path)
        if problem is None:
            return path
        report(f"pretrain: {path} is damaged ({problem}); it is skipped")
    if found:
        raise CheckpointError(f"every checkpoint in {root} is damaged (newest: {found[-1][1].name}); delete "
                              f"{root} to train from the start")
    return None


def remove_unfinished(root: Path) -> None:
    """``step-N.tmp`` folders left by a run killed while saving."""
    for tmp in root.glob("step-*.tmp") if root.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)


def checkpoint_fingerprint(checkpoint: Path) -> dict:
    """What tells this checkpoint from any other in its place, such as the same step of a run
    trained again: the stamp of its weights, which are written once (then the folder is renamed) and
    never rewritten. Hashing them would read gigabytes on every pipeline run."""
    return {"step": Path(checkpoint).name, MODEL: file_stamp(_require(checkpoint, MODEL))}


@dataclass
class Progress:
    """Where a run stands at a checkpoint, besides its weights and optimizer states."""
    step: int
    data_state: dict  # the data position (batch number, per-language cursors and epochs)
    skipped_steps: int = 0  # non-finite steps skipped so far
    world_size: int = 1  # processes that trained the run


def save_checkpoint(root: Path, progress: Progress, *, model: RTDModel, updates, settings, tokenizer: Path,
                    keep: int) -> Path:
    """``updates``: the run's optimizer steps (named, each with its optimizer and scheduler). A
    checkpoint that cannot fit is refused before any of it is written; one the disk refuses midway
    is removed, and the error names the file."""
    final = root / f"step-{progress.step}"
    tmp = root / f"step-{progress.step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    training_state = {STEP: progress.step, SKIPPED_STEPS: progress.skipped_steps, WORLD_SIZE: progress.world_size,
                      OPTIMIZERS: {update.name: update.optimizer.state_dict() for update in updates},
                      SCHEDULERS: {update.name: update.scheduler.state_dict() for update in updates},
                      RNG: rng_states()}
    tokenizer_files = [tokenizer / name for name in TOKENIZER_FILES if (tokenizer / name).is_file()]
    model_bytes, state_bytes = tensor_bytes(model.state_dict()), tensor_bytes(training_state)
    needed = model_bytes + state_bytes + sum(path.stat().st_size for path in tokenizer_files)
    root.mkdir(parents=True, exist_ok=True)
    require_room(root, needed, f"checkpoint step-{progress.step}")
    with writing(tmp, needed, partial=tmp):
        tmp.mkdir()
        with writing(tmp / MODEL, model_bytes):
            safetensors.torch.save_model(model, str(tmp / MODEL))
        write_json_atomic(tmp / DESCRIPTION, rtd_description(model))
        with writing(tmp / TRAINING_STATE, state_bytes), \
                open(tmp / TRAINING_STATE, "wb") as file:  # a file object: torch then raises the OSError
            torch.save(training_state, file)
        write_json_atomic(tmp / DATA_STATE, progress.data_state)
        write_json_atomic(tmp / SETTINGS, asdict(settings))
        (tmp / TOKENIZER).mkdir()
        for path in tokenizer_files:
            shutil.copy2(path, tmp / TOKENIZER / path.name)
        write_json_atomic(tmp / RECORD, _record(tmp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for _, old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _require(checkpoint: Path, name: str) -> Path:
    path = checkpoint / name
    if not path.exists():
        raise CheckpointError(f"{checkpoint} is not a pretraining checkpoint: {name} is missing "
                              "(expected a folder <out>/checkpoints/step-N written by `mdeberta pretrain run`)")
    return path


def load_model(checkpoint: Path, attention: str = "auto") -> RTDModel:
    """The RTD model of a checkpoint, on the CPU."""
    checkpoint = Path(checkpoint)
    description = json.loads(_require(checkpoint, DESCRIPTION).read_text(encoding="utf-8"))
    model = build_rtd_model(description, attention)
    missing, unexpected = safetensors.torch.load_model(model, str(_require(checkpoint, MODEL)),
                                                       strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}/model.safetensors does not fit model.json "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def load_training_state(checkpoint: Path, updates) -> Progress:
    """Restores each update's optimizer and scheduler, and the RNG states."""
    state = torch.load(_require(checkpoint, TRAINING_STATE), map_location="cpu", weights_only=True)
    if "optimizer" in state:  # written before decoupled updates: one joint update
        state[OPTIMIZERS], state[SCHEDULERS] = {"model": state["optimizer"]}, {"model": state["scheduler"]}
    for update in updates:
        update.optimizer.load_state_dict(state[OPTIMIZERS][update.name])
        update.scheduler.load_state_dict(state[SCHEDULERS][update.name])
    restore_rng_states(state[RNG])
    data_state = json.loads(_require(checkpoint, DATA_STATE).read_text(encoding="utf-8"))
    return Progress(state[STEP], data_state, state.get(SKIPPED_STEPS, 0), state.get(WORLD_SIZE, 1))


def trained_world_size(checkpoint: Path) -> int:
    """How many processes trained the run up to this checkpoint (1 where a checkpoint does not
    record it). Memory-mapped: the optimizer state, twice the model's size, is not read."""
    state = torch.load(_require(checkpoint, TRAINING_STATE), map_location="cpu", weights_only=True, mmap=True)
    return state.get(WORLD_SIZE, 1)


def saved_settings(checkpoint: Path) -> dict:
    return json.loads(_require(checkpoint, SETTINGS).read_text(encoding="utf-8"))
