"""Builds and loads the C++ kernel of the ``fused`` attention backend (fused_attention.cpp).

It is compiled on first use, for the CPU it runs on (``-march=native``), with the C++
compiler torch's extensions use, and cached by torch (``TORCH_EXTENSIONS_DIR``, by default
~/.cache/torch_extensions): about 40 s once per machine, torch version and kernel source.
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

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_attention.cpp")


def _cpu_signature() -> str:
    """The CPU's model and feature flags: a ``-march=native`` build is only valid where they match."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


@functools.cache
def load():
    """The compiled module, or None when it cannot be built (after one warning saying why)."""
    from torch.utils import cpp_extension

    # torch caches a build by name and source; the name also carries the CPU and torch's version
    digest = hashlib.sha1((_cpu_signature() + torch.__version__ + SOURCE.read_text()).encode()).hexdigest()[:12]
    print("mdeberta: loading the fused attention kernel (the first time on a machine it is compiled, "
          "about 40 s)", file=sys.stderr, flush=True)
    try:
        return cpp_extension.load(name=f"mdeberta_fused_attention_{digest}", sources=[str(SOURCE)],
                                  extra_cflags=["-O3", "-march=native", "-fopenmp-simd"], verbose=False)
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
