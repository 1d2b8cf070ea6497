"""Hidden-state dropout that keeps no mask: on CPU in float32 training, where the fused kernel
builds, the mask is drawn in the kernel from a seed and redrawn from it in backward.
``nn.Dropout`` keeps a 4-byte mask per element and draws it with ``bernoulli_``, about 5 ns an
element on a CPU core; elsewhere (CUDA, other dtypes, torch.compile) this is ``nn.Dropout``."""

from __future__ import annotations

import torch
from torch import nn

from . import fused_kernel


def dropout_threshold(p: float) -> int:
    """Masks from random 16-bit lanes drop an element where its lane is below this: the rate
    is ``p`` rounded to a multiple of 1/65536 (0.1 -> 0.100006)."""
    return round(p * 65536)


def kernel_drops(p: float) -> bool:
    """Whether the kernel's masks apply: a rate above 0 and below 1 once rounded."""
    return 0 < dropout_threshold(p) < 65536


def dropout_seed(p: float) -> tuple[int, int, float]:
    """A seed for the kernel's counter-based masks, drawn from torch's global generator (so
    ``torch.manual_seed`` reproduces them), the threshold and the rate it gives."""
    threshold = dropout_threshold(p)
    seed = int(torch.randint(-2**63, 2**63 - 1, (), dtype=torch.int64))
    return seed, threshold, threshold / 65536


class _SeededDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, kernel, p):
        seed, threshold, rate = dropout_seed(p)
        ctx.kernel, ctx.mask = kernel, (seed, threshold, 1.0 / (1.0 - rate))
        return kernel.dropout(hidden.contiguous(), *ctx.mask)

    @staticmethod
    def backward(ctx, grad):
        return ctx.kernel.dropout(grad.contiguous(), *ctx.mask), None, None


class Dropout(nn.Dropout):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.training or not kernel_drops(self.p) or torch.compiler.is_compiling():
            return super().forward(hidden)
        kernel = fused_kernel.load_for(hidden)
        return super().forward(hidden) if kernel is None else _SeededDropout.apply(hidden, kernel, self.p)
