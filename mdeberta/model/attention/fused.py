"""``fused``: ``compact`` with everything between its GEMMs in a C++ kernel (fused_attention.cpp,
built on first use by ``fused_kernel``): one pass over each score row forward (gathers, mask,
softmax, dropout) and one backward (softmax gradient, scatter-adds into the position tables),
where compact makes about ten. It draws its dropout masks itself, from a seed (other masks than
compact's for the same torch seed). CPU and float32 only; elsewhere, where the kernel cannot be
built, or at a dropout rate its masks cannot draw, it runs compact's PyTorch code. Opaque to
torch.compile.
"""

from __future__ import annotations

import torch

from .. import fused_kernel
from ..dropout import dropout_seed, kernel_drops
from .compact import (CompactBackend, attend_values, node_inputs, probability_gradients, projection_gradients,
                      table_gradient_shapes)
from .positions import position_tables


def kernel_layout(index, mask, batch: int, length: int, width: int):
    """The index as contiguous int32 [1 or B, Lq, Lk] and the mask as contiguous bool [B, Lq, Lk]."""
    index = index.reshape(-1, length, width).to(torch.int32).contiguous()
    if mask is not None:
        mask = mask.expand(batch, 1, length, width).reshape(batch, length, width).contiguous()
    return index, mask


def kernel_probabilities(kernel, queries, keys, c2p, p2c, index, mask, scale, dropout_p):
    """Compact's ``probabilities`` by the kernel, from the index and mask in its layout; the
    dropout mask is drawn in the kernel (``dropout_seed``)."""
    heads, length, width = queries.shape[1], queries.shape[-2], keys.shape[-2]
    scores = torch.matmul(queries, keys.transpose(-1, -2))
    seed, threshold, rate = dropout_seed(dropout_p) if dropout_p > 0 else (0, 0, 0.0)
    kept = kernel.probabilities(
        scores.view(-1, length, width), 1.0 / scale,
        None if c2p is None else c2p.reshape(-1, length, c2p.shape[-1]),
        None if p2c is None else p2c.reshape(-1, p2c.shape[-2], width),
        index, heads, mask, seed, threshold)
    return scores, kept.view_as(scores), 1.0 / (1.0 - rate)


def kernel_score_gradients(kernel, grad, probs, index, mask, pos_key, pos_query):
    """Compact's ``score_gradients`` by the kernel, from the index and mask in its layout."""
    c2p_shape, p2c_shape = table_gradient_shapes(grad, pos_key, pos_query)
    length, width = grad.shape[-2], grad.shape[-1]
    grad_c2p, grad_p2c = kernel.score_gradients(grad.view(-1, length, width), probs.view(-1, length, width),
                                                index, grad.shape[1], mask, c2p_shape[-1],
                                                pos_key is not None, pos_query is not None)
    return (None if pos_key is None else grad_c2p.view(c2p_shape),
            None if pos_query is None else grad_p2c.view(p2c_shape))


class FusedAttention(torch.autograd.Function):
    """``CompactAttention``'s node with the kernel between its GEMMs; ``kernel`` is the loaded
    module (``fused_kernel.load``), ``dropout_p`` 0 or a rate the kernel's masks draw.

    Saved for backward: Q, K, V, PosK, PosQ, the probabilities with the dropout mask in their
    sign bits (as compact's), and the index and padding mask in the kernel's layout
    (``kernel_layout``: int32 [1 or B, Lq, Lk], bool [B, Lq, Lk] or None)."""

    @staticmethod
    def forward(ctx, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p, kernel):
        c2p, p2c = position_tables(queries, keys, pos_key, pos_query)
        index, mask = kernel_layout(index, mask, queries.shape[0], queries.shape[-2], keys.shape[-2])
        probs, kept, keep_scale = kernel_probabilities(kernel, queries, keys, c2p, p2c, index, mask, scale,
                                                       dropout_p)
        del c2p, p2c
        ctx.save_for_backward(queries, keys, values, pos_key, pos_query, probs, index, mask)
        ctx.scale, ctx.keep_scale, ctx.dropout, ctx.kernel = scale, keep_scale, dropout_p > 0, kernel
        return attend_values(kept, values, keep_scale, ctx.dropout)

    @staticmethod
    def backward(ctx, grad_context):
        queries, keys, values, pos_key, pos_query, probs, index, mask = ctx.saved_tensors
        grad, grad_values = probability_gradients(ctx, grad_context, values, probs)
        grad_c2p, grad_p2c = kernel_score_gradients(ctx.kernel, grad, probs, index, mask, pos_key, pos_query)
        del probs
        grad_queries, grad_keys, grad_pos_key, grad_pos_query = projection_gradients(
            grad, grad_c2p, grad_p2c, queries, keys, pos_key, pos_query, ctx.scale)
        return grad_queries, grad_keys, grad_values, grad_pos_key, grad_pos_query, None, None, None, None, None


class FusedBackend(CompactBackend):
    def forward(self, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p):
        kernel = fused_kernel.load_for(queries)
        if kernel is None or (dropout_p > 0 and not kernel_drops(dropout_p)):
            return super().forward(queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p)
        return FusedAttention.apply(*node_inputs(queries, keys, values, pos_key, pos_query, scale),
                                    index, mask, scale, dropout_p, kernel)
