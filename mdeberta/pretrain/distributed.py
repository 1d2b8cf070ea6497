"""Process-group setup for torchrun: one process per GPU (NCCL), or per CPU worker (gloo).

Without torchrun's environment the run is a single process and nothing here costs anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

PATIENT_TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    patient_group: object = None  # a gloo group whose barrier waits for hours (see wait_for_main)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wait_for_main(self) -> None:
        """A barrier for one-off work on process 0 (tokenizing a corpus can take hours): the
        collective timeout that catches hangs in training would end the wait too early."""
        if self.distributed:
            dist.barrier(group=self.patient_group)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (e.g. a SIGTERM seen by one process)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.size
        return values


def init_world() -> World:
    """Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; picks the local GPU when there is one."""
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
    return World(rank=rank, size=size, local_rank=local_rank, device=device, patient_group=patient_group)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
