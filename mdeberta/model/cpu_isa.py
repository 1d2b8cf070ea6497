"""The vector instruction set of this process: the one torch's CPU kernels dispatch to
(``ATEN_CPU_CAPABILITY`` may lower it). The project's own compiled CPU code follows it, so that
one process runs one ISA, and a cached build for one ISA is never loaded under another.

Why both matter: inductor honours ``ATEN_CPU_CAPABILITY`` when it generates code but leaves it
out of its on-disk cache key (torch 2.13), so code generated for AVX2 (8-float loops) was loaded
by an AVX-512 process (16-float vectors) and gave wrong results for every (batch, head); and a
kernel built for one CPU must be rebuilt, not loaded, on a CPU of another kind.
"""

from __future__ import annotations

import torch

# bits of a vector register, and the compiler flags of torch's own kernels for that capability
_VECTOR_BITS = {"AVX512": 512, "AVX2": 256}
_COMPILER_FLAGS = {
    "AVX512": ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"),
    "AVX2": ("-mavx2", "-mfma"),
}


def capability() -> str:
    """torch's name for it: AVX512, AVX2, DEFAULT (no vector kernels, or not x86), ..."""
    return torch.backends.cpu.get_cpu_capability()


def inductor_options(device_type: str) -> dict:
    """torch.compile options that pin inductor's CPU vector width to this process's capability;
    inductor's cache keys its config, so code generated for one width is not loaded for another."""
    bits = _VECTOR_BITS.get(capability()) if device_type == "cpu" else None
    return {} if bits is None else {"cpp.simdlen": bits}


def compiler_flags() -> tuple[str, ...] | None:
    """Flags that build C++ for this capability (as torch builds its own kernels for it), or None
    where torch names none (other architectures): the caller builds for the machine at hand."""
    return _COMPILER_FLAGS.get(capability())
