"""Builds and loads the C++ kernel of the ``fused`` attention backend (fused_attention.cpp).

It is compiled on first use, for the vector instruction set torch's own kernels use in this
process (``cpu_isa``: AVX-512 or AVX2 on x86, so ``ATEN_CPU_CAPABILITY=avx2`` builds and tests
the AVX2 kernel on an AVX-512 machine; ``-march=native`` elsewhere), with the C++ compiler
torch's extensions use, and cached by torch (``TORCH_EXTENSIONS_DIR``, by default
~/.cache/torch_extensions) under a name that carries that instruction set: about 40 s once per
instruction set, torch version and kernel source.
Where it cannot be built (no compiler, no ninja), ``load`` warns once and the callers fall
back to the ``compact`` backend's PyTorch code, which computes the same thing more slowly.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sys
from pathlib import Path

import torch

from . import cpu_isa

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_attention.cpp")


def _build_flags() -> tuple[str, ...]:
    return ("-O3", "-fopenmp-simd", *(cpu_isa.compiler_flags() or ("-march=native",)))


def _cpu_signature() -> str:
    """The CPU's model and feature flags: a ``-march=native`` build is only valid where they match."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


def build_name(flags: tuple[str, ...]) -> str:
    """torch caches a build by name and source; the name also carries the instruction set (the
    CPU itself for a ``-march=native`` build) and torch's version."""
    machine = _cpu_signature() if "-march=native" in flags else ""
    key = "\n".join((*flags, machine, torch.__version__, SOURCE.read_text()))
    return f"mdeberta_fused_attention_{hashlib.sha1(key.encode()).hexdigest()[:12]}"


@functools.cache
def load():
    """The compiled module, or None when it cannot be built (after one warning saying why)."""
    from torch.utils import cpp_extension

    flags = _build_flags()
    print("mdeberta: loading the fused attention kernel (the first time for an instruction set and torch "
          "version it is compiled, about 40 s)", file=sys.stderr, flush=True)
    try:
        return cpp_extension.load(name=build_name(flags), sources=[str(SOURCE)],
                                  extra_cflags=list(flags), verbose=False)
    except Exception as error:  # compiler or ninja missing, unsupported platform: any build failure
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        # the compiler's own complaint when there is one, not ninja's closing line
        reason = next((line for line in lines if "error:" in line.lower() or "not found" in line), lines[-1])
        logger.warning("the fused attention kernel could not be built (%s); attention runs the compact "
                       "backend's PyTorch code instead. Install a C++ compiler and `pip install ninja` "
                       "to build it.", reason)
        return None


def load_for(tensor):
    """The kernel where it applies to ``tensor`` (CPU, float32) and builds, else None."""
    return load() if tensor.device.type == "cpu" and tensor.dtype == torch.float32 else None
