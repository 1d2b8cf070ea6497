"""Where a run executes: one process, or one of several started by torchrun (DDP).

Process 0 writes every file; the others train on their share of each batch and evaluate their
share of each set.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    precision: str = "fp32"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, items: list) -> list:
        """Every process' ``items``, concatenated in rank order."""
        if self.world == 1:
            return items
        parts = [None] * self.world
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def broadcast(self, value):
        """Process 0's ``value`` everywhere (e.g. whether the last evaluation was the best)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def start_runtime(precision: str = "auto") -> Runtime:
    """Joins the process group when started by torchrun (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return Runtime(device, rank, world, precision)
