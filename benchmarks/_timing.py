"""Timing and memory protocol shared by the training-step benchmarks (model_speed.py, pretrain_speed.py).

Speed: every contender takes warm-up steps, then rounds in which each runs one step in turn, so
that a busy machine slows them all alike; the median of the rounds is reported.
Memory: one contender per fresh process (the benchmark re-runs itself as a child), so allocator
caches and other contenders' tensors never count; on CPU the high-water mark of the resident set,
on CUDA the allocator's peak, both above what the process already holds before the measured step.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import NamedTuple

import torch


class StepTime(NamedTuple):
    """Wall seconds, and CPU seconds of this process (all its threads): on a shared machine the
    CPU time of a one-thread run measures the work done, whatever else runs beside it."""

    wall: float
    cpu: float


def timed(step: Callable[[], object], device: str) -> StepTime:
    """One call of ``step``, including the GPU work it queued."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return StepTime(time.perf_counter() - wall, time.process_time() - cpu)


def interleaved_medians(steps: dict[str, Callable[[], object]], rounds: int, device: str,
                        warmup: int = 1) -> dict[str, StepTime]:
    """Median wall and CPU time of each contender's step over ``rounds`` interleaved rounds."""
    for step in steps.values():
        for _ in range(warmup):
            timed(step, device)
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    return {name: StepTime(*(statistics.median(column) for column in zip(*values)))
            for name, values in times.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Linux: restart the process's high-water mark, so imports and model building do not count."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def release_freed_memory() -> None:
    """Hand memory freed by earlier steps back to the OS (glibc keeps it otherwise), so that a
    measured step cannot reuse pages already counted in the resident set before it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_step_bytes(step: Callable[[], object], device: str) -> tuple[int, int]:
    """(peak memory during one call of ``step`` above what is held before it, that peak in all)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        before = _rss_bytes()
        _reset_peak_rss()
        step()
        peak = _peak_rss_bytes()
    return peak - before, peak


def json_from_child(command: list[str]) -> dict:
    """Run a benchmark's child process; its last line of output is a JSON object."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"benchmark child failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
