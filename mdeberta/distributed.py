"""Where a stage runs: one process, or one of several started by torchrun (one per GPU with NCCL,
or per CPU worker with gloo). Shared by the pretraining and XNLI stages.

Without torchrun's environment the run is a single process and nothing here costs anything.
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

PATIENT_TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"  # bf16 or fp32, resolved from a stage's "auto" by init_world
    patient_group: object = None  # a gloo group whose barrier waits for hours (see wait_for_main)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def autocast(self):
        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wait_for_main(self) -> None:
        """A barrier for I/O on process 0 (tokenizing a corpus can take hours, writing a large
        checkpoint to a network filesystem many minutes): the collective timeout that catches
        hangs in training would end the wait too early."""
        if self.distributed:
            dist.barrier(group=self.patient_group)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (e.g. a SIGTERM seen by one process)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def any_later(self, flag: bool):
        """``any`` without waiting for the device: returns a function that waits and answers, to call
        once more work is queued, so that the device is kept busy meanwhile."""
        if not self.distributed:
            return lambda: flag
        value = torch.full((1,), int(flag), device=self.device)  # filled on the device: no copy to wait for
        work = dist.all_reduce(value, op=dist.ReduceOp.MAX, async_op=True)

        def answer() -> bool:
            work.wait()
            return bool(value.item())
        return answer

    def gather(self, items: list) -> list:
        """Every process' ``items``, concatenated in rank order."""
        if not self.distributed:
            return items
        parts = [None] * self.size
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def broadcast(self, value):
        """Process 0's ``value`` everywhere (e.g. whether the last evaluation was the best)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.size
        return values


def init_world(precision: str = "auto") -> World:
    """Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; picks the local GPU when there is one.
    ``precision`` auto means bf16 autocast on CUDA and fp32 on CPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    patient_group = None
    if size > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        patient_group = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return World(rank=rank, size=size, local_rank=local_rank, device=device, precision=precision,
                 patient_group=patient_group)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rng_states() -> dict:
    """Every random generator a training loop draws from (python, numpy, torch CPU and CUDA)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, keys.tolist(), position, has_gauss, cached], "python": random.getstate()}


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])
