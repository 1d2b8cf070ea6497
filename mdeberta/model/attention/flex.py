"""``flex``: PyTorch's FlexAttention (compiled), the position terms and the padding mask in its
``score_mod``, read from the c2p/p2c tables, so that no [B, H, L, L] bias is materialised and the
tables get their gradients inside the kernel's backward. Meant for CUDA; on CPU it runs inference
only (FlexAttention has no CPU backward), and it has no attention-probability dropout, so it
refuses training with a nonzero ``attention_probs_dropout_prob``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from .. import cpu_isa
from .positions import position_tables, scaled_projections


class FlexUnsupportedError(UserError, RuntimeError):
    pass


@functools.cache
def compiled_flex_attention(device_type: str):
    """FlexAttention is fast only compiled (eager, it materialises the scores). On CUDA a new
    length makes the compiled code shape-generic; inductor's CPU template fails to compile with
    symbolic lengths (torch 2.13), so on CPU each length is compiled on its own, for this
    process's vector width (``cpu_isa``)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False if device_type == "cpu" else None,
                         options=cpu_isa.inductor_options(device_type))


# Inductor's CPU FlexAttention template (torch 2.13) computes Q.K^T by blocks of 16 keys, and its
# block for the last keys (length not a multiple of 16) is wrong when that remainder and the head
# size are multiples of the vector width and the head size is below 24: it multiplies and stores
# 16 key columns where fewer remain, reading past the keys and over the softmax's running maxima.
# With 8-float vectors (AVX2), head sizes 8 and 16 and lengths of 8 mod 16 gave wrong or NaN
# outputs. Zero columns appended to Q and K change no score and send every head size past it.
_CPU_MIN_HEAD_SIZE = 24
_CPU_PADDED_HEAD_SIZE = 32


def pad_head_size_for_cpu(queries, keys):
    size = queries.shape[-1]
    if queries.device.type != "cpu" or size >= _CPU_MIN_HEAD_SIZE:
        return queries, keys
    return (F.pad(x, (0, _CPU_PADDED_HEAD_SIZE - size)) for x in (queries, keys))


def trains_on(device: torch.device) -> bool:
    return device.type != "cpu"  # PyTorch's FlexAttention has no CPU backward


def refuse_unsupported_training(queries, dropout_p: float) -> None:
    if dropout_p > 0:
        raise FlexUnsupportedError(
            f"the flex attention backend has no attention-probability dropout, and this model trains with "
            f"attention_probs_dropout_prob={dropout_p}: choose another backend (auto, sdpa) or set that "
            f"dropout to 0")
    if not trains_on(queries.device) and torch.is_grad_enabled() and queries.requires_grad:
        raise FlexUnsupportedError("the flex attention backend cannot train on CPU (FlexAttention has no CPU "
                                   "backward): choose auto, fused or compact for CPU training")


class FlexBackend(nn.Module):
    def forward(self, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p):
        """score_mod = + c2p[b, h, i, r] + p2c[b, h, r, j], r = index[i, j]; masked scores become
        finfo.min, as in the reference (fully padded rows attend uniformly)."""
        refuse_unsupported_training(queries, dropout_p)
        c2p, p2c = position_tables(queries, keys, *scaled_projections(pos_key, pos_query, scale))
        per_batch_index = index.dim() == 4  # [B, 1, Lq, Lk]: the Enhanced Mask Decoder's own queries
        fill = torch.finfo(torch.float32).min

        def disentangled(score, b, h, i, j):
            r = index[b, 0, i, j] if per_batch_index else index[i, j]
            if c2p is not None:
                score = score + c2p[b, h, i, r]
            if p2c is not None:
                score = score + p2c[b, h, r, j]
            return score if mask is None else torch.where(mask[b, 0, i, j], score, fill)

        flex_attention = compiled_flex_attention(queries.device.type)
        queries, keys = pad_head_size_for_cpu(queries, keys)
        return flex_attention(queries, keys, values, score_mod=disentangled, scale=1.0 / scale)
