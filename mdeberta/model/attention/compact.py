"""``compact``: the position GEMMs and gathers of ``sdpa``, with scores, softmax, dropout and
attention x V in one autograd node whose backward is written out. Meant for CPU training.

It keeps only Q, K, V and the probabilities for backward, the dropout mask in their sign bits
(PyTorch's math path also keeps the dropped probabilities: 4 bytes per score more), works in
place with vectorised passes only, and draws the dropout mask from 16-bit lanes of random
64-bit words (a quarter of ``bernoulli_``'s generator calls).

The GEMMs around the probabilities, forward and backward, are also the ``fused`` backend's
(``attend_values``, ``probability_gradients``, ``projection_gradients``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..dropout import dropout_threshold
from .positions import position_tables, scaled_projections


def dropout_signs(shape, p: float, device, dtype=torch.float32) -> tuple[torch.Tensor, float]:
    """A tensor that is negative exactly where an element is dropped, and the rate it was drawn
    with: ``p`` rounded to a multiple of 1/65536 (0.1 -> 0.100006).

    Four 16-bit lanes per random 64-bit word take a quarter of the generator calls of
    ``bernoulli_``; the global generator draws them, so seeding and saved RNG states reproduce
    the masks. A sign rather than a bool mask, because it is applied with vectorised
    ``copysign``/``clamp`` where ``masked_fill`` with a bool mask is about 5x slower on CPU."""
    threshold = dropout_threshold(p)
    count = math.prod(shape)
    words = torch.randint(-2**63, 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=device)
    lanes = words.view(torch.int16)[:count].view(shape)
    # lane < threshold - 32768  <=>  lane - (threshold - 32768 - 0.5) < 0, exact in float32.
    signs = lanes.to(torch.float32).sub_(threshold - 32768 - 0.5)
    return signs.to(dtype), threshold / 65536


def probabilities(queries, keys, c2p, p2c, index, mask, scale, dropout_p):
    """The forward between the GEMMs: the signed probabilities, the kept ones and the
    dropout's 1 / (1 - rate)."""
    rows, length, width = queries.shape[:2], queries.shape[-2], keys.shape[-2]
    index = index.expand(*rows, length, width)
    scores = queries.new_zeros(*rows, length, width) if c2p is None else torch.gather(c2p, -1, index)
    if p2c is not None:
        scores.add_(torch.gather(p2c, -2, index))
    scores.view(-1, length, width).baddbmm_(queries.reshape(-1, length, queries.shape[-1]),
                                            keys.reshape(-1, width, keys.shape[-1]).transpose(1, 2),
                                            alpha=1.0 / scale)
    if mask is not None:
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    del scores
    if dropout_p == 0:
        return probs, probs, 1.0
    signs, rate = dropout_signs(probs.shape, dropout_p, probs.device, probs.dtype)
    probs.copysign_(signs)
    # a rate of 1 drops everything: the output is 0, as nn.Dropout(1.0) gives
    return probs, torch.clamp_min(probs, 0.0, out=signs), 1.0 / (1.0 - rate) if rate < 1 else 0.0


def softmax_backward(grad, probs, mask, dropout: bool) -> None:
    """In place: the gradient of the kept probabilities becomes that of the scores,
    kept * g - P * sum(kept * g) (the softmax gradient with dropout folded in)."""
    kept = probs.clamp_min(0.0) if dropout else probs
    grad.mul_(kept)
    row_sums = grad.sum(-1, keepdim=True)
    full = torch.abs(probs, out=kept) if dropout else probs
    del kept
    grad.addcmul_(full, row_sums, value=-1.0)
    if mask is not None:
        grad.masked_fill_(~mask, 0.0)


def table_gradient_shapes(grad, pos_key, pos_query):
    """The shapes of c2p [B, H, Lq, 2 span] and p2c [B, H, 2 span, Lk] for a score gradient ``grad``."""
    tables = [table for table in (pos_key, pos_query) if table is not None]
    span = tables[0].shape[-2] if tables else 0
    batch_heads, length, width = grad.shape[:2], grad.shape[-2], grad.shape[-1]
    return (*batch_heads, length, span), (*batch_heads, span, width)


def score_gradients(grad, probs, index, mask, pos_key, pos_query, dropout: bool):
    """In place: ``grad`` (of the kept probabilities) becomes that of the scores; returns the
    gradients of the c2p [B, H, Lq, 2 span] and p2c [B, H, 2 span, Lk] tables (None for an absent one)."""
    softmax_backward(grad, probs, mask, dropout)
    index = index.expand(grad.shape)
    c2p_shape, p2c_shape = table_gradient_shapes(grad, pos_key, pos_query)
    grad_c2p = None if pos_key is None else grad.new_zeros(c2p_shape).scatter_add_(-1, index, grad)
    grad_p2c = None if pos_query is None else grad.new_zeros(p2c_shape).scatter_add_(-2, index, grad)
    return grad_c2p, grad_p2c


def attend_values(kept, values, keep_scale: float, dropout: bool):
    """The kept probabilities x V; dropout's 1/(1 - p) scales this [.., L, d] output rather
    than the [.., L, L] probabilities."""
    context = torch.matmul(kept, values)
    return context.mul_(keep_scale) if dropout else context


def probability_gradients(ctx, grad_context, values, probs):
    """The gradients of the kept probabilities and of V, from the signed probabilities."""
    if ctx.dropout:
        grad_context = grad_context * ctx.keep_scale
    grad = torch.matmul(grad_context, values.transpose(-1, -2))
    kept = probs.clamp_min(0.0) if ctx.dropout else probs
    # X^T.Y is computed as (Y^T.X)^T: MKL's bmm with the long dimension transposed in its
    # first operand measured 30% slower here (A/B in one process: the xsmall step 5% faster).
    grad_values = torch.matmul(grad_context.transpose(-1, -2), kept).transpose(-1, -2)
    return grad, grad_values


def projection_gradients(grad, grad_c2p, grad_p2c, queries, keys, pos_key, pos_query, scale):
    """The gradients of Q, K, PosK and PosQ from those of the scores and of the position tables:
    d(Q) = d(scores).K / scale + d(c2p).PosK and d(K)^T = Q^T.d(scores) / scale + PosQ^T.d(p2c)
    (K's gradient built transposed, as above), each position part first and the score part
    accumulated onto it by one GEMM, where autograd's broadcast matmuls added copies and sums."""
    rows, length, width, size = queries.shape[:-2].numel(), grad.shape[-2], grad.shape[-1], queries.shape[-1]
    flat_grad = grad.view(rows, length, width)
    if grad_c2p is None:
        grad_queries = torch.matmul(grad, keys).mul_(1.0 / scale)
    else:
        grad_queries = torch.matmul(grad_c2p, pos_key)
        grad_queries.view(rows, length, size).baddbmm_(flat_grad, keys.view(rows, width, size), alpha=1.0 / scale)
    if grad_p2c is None:
        grad_keys_t = torch.matmul(queries.transpose(-1, -2), grad).mul_(1.0 / scale)
    else:
        grad_keys_t = torch.matmul(pos_query.transpose(-1, -2), grad_p2c)
        grad_keys_t.view(rows, size, width).baddbmm_(queries.view(rows, length, size).transpose(1, 2),
                                                     flat_grad, alpha=1.0 / scale)
    # the tables are shared by the batch: d(PosK) = sum of d(c2p)^T.Q, d(PosQ) = sum of d(p2c).K
    grad_pos_key = None if grad_c2p is None else \
        torch.matmul(queries.transpose(-1, -2), grad_c2p).sum(0).transpose(-1, -2)
    grad_pos_query = None if grad_p2c is None else torch.matmul(grad_p2c, keys).sum(0)
    return grad_queries, grad_keys_t.transpose(-1, -2), grad_pos_key, grad_pos_query


class CompactAttention(torch.autograd.Function):
    """softmax(Q.K^T / scale + gathered c2p + gathered p2c, masked) -> dropout -> x V as one node,
    the position tables c2p = Q.PosK^T and p2c = PosQ.K^T included (PosK, PosQ: [H, 2 span, d],
    already divided by the scale; either may be None).

    Saved for backward: Q, K, V, PosK, PosQ, the probabilities with the dropout mask in their
    sign bits (probabilities are >= 0, so a dropped one is kept negated: the mask costs no
    memory, the kept probabilities are a ``clamp`` away and the full ones an ``abs``), the
    position index ([Lq, Lk] or [B, 1, Lq, Lk]) and the padding mask ([B, 1, Lq, Lk] or None).
    Masked scores get no gradient, as in the reference's masked_fill."""

    @staticmethod
    def forward(ctx, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p):
        c2p, p2c = position_tables(queries, keys, pos_key, pos_query)
        probs, kept, keep_scale = probabilities(queries, keys, c2p, p2c, index, mask, scale, dropout_p)
        del c2p, p2c
        ctx.save_for_backward(queries, keys, values, pos_key, pos_query, probs, index, mask)
        ctx.scale, ctx.keep_scale, ctx.dropout = scale, keep_scale, dropout_p > 0
        return attend_values(kept, values, keep_scale, ctx.dropout)

    @staticmethod
    def backward(ctx, grad_context):
        queries, keys, values, pos_key, pos_query, probs, index, mask = ctx.saved_tensors
        grad, grad_values = probability_gradients(ctx, grad_context, values, probs)
        grad_c2p, grad_p2c = score_gradients(grad, probs, index, mask, pos_key, pos_query, ctx.dropout)
        del probs
        grad_queries, grad_keys, grad_pos_key, grad_pos_query = projection_gradients(
            grad, grad_c2p, grad_p2c, queries, keys, pos_key, pos_query, ctx.scale)
        return grad_queries, grad_keys, grad_values, grad_pos_key, grad_pos_query, None, None, None, None


def node_inputs(queries, keys, values, pos_key, pos_query, scale):
    """Q, K and V contiguous (the node's flat views and in-place GEMMs need them) and PosK and
    PosQ divided by the scale."""
    return (queries.contiguous(), keys.contiguous(), values.contiguous(),
            *scaled_projections(pos_key, pos_query, scale))


class CompactBackend(nn.Module):
    def forward(self, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p):
        return CompactAttention.apply(*node_inputs(queries, keys, values, pos_key, pos_query, scale),
                                      index, mask, scale, dropout_p)
