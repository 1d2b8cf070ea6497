"""Relative positions and the disentangled position terms, shared by every backend.

The position terms of score(i, j) are q_i . PosK[r(i, j)] (content to position, c2p) and
k_j . PosQ[r(i, j)] (position to content, p2c). Backends compute them as two GEMMs against the
2 span position table, c2p = Q.PosK^T [B, H, Lq, 2 span] and p2c = PosQ.K^T [B, H, 2 span, Lk],
and read them at r(i, j): gathered into a [B, H, Lq, Lk] bias, inside a kernel, or in a score_mod.
"""

from __future__ import annotations

import torch


def log_bucket(relative: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa's relative-position buckets: exact within +-buckets/2, logarithmic beyond, so
    distances up to ``max_position`` fit in ``buckets`` slots. Computed in float32 like the
    reference so that every distance lands in the same bucket."""
    mid = buckets // 2
    sign = torch.sign(relative)
    near = (relative < mid) & (relative > -mid)
    distance = torch.where(near, torch.full_like(relative, mid - 1), relative.abs())
    log_scale = torch.log(torch.tensor((max_position - 1) / mid))
    far = torch.ceil(torch.log(distance / mid) / log_scale * (mid - 1)) + mid
    return torch.where(distance <= mid, relative.to(far.dtype), far * sign).long()


def relative_index(length: int, span: int, buckets: int, max_position: int, device) -> torch.Tensor:
    """[L, L] index into the 2*span relative table: clamp(bucket(i - j) + span).

    Computed once per distance (2L - 1 values) and expanded by indexing, not per (i, j) pair."""
    offsets = torch.arange(length - 1, -length, -1, device=device)  # i - j for i - j + L - 1 = 0 .. 2L - 2
    if buckets > 0 and max_position > 0:
        offsets = log_bucket(offsets, buckets, max_position)
    by_offset = torch.clamp(offsets + span, 0, 2 * span - 1)
    rows = torch.arange(length, device=device)
    return by_offset[(length - 1) - rows[:, None] + rows[None, :]]


def scaled_projections(pos_key, pos_query, scale: float):
    """PosK and PosQ divided by the score scale: dividing these small [H, 2 span, d] tables
    costs less than dividing the [B, H, L, 2 span] products (None stays None)."""
    return tuple(None if table is None else table / scale for table in (pos_key, pos_query))


def position_tables(queries, keys, pos_key, pos_query):
    """c2p = Q.PosK^T [B, H, Lq, 2 span] and p2c = PosQ.K^T [B, H, 2 span, Lk] (None where the
    config leaves one out). p2c is built transposed so that its gather runs along the
    positions and lands in [Lq, Lk] order, with no transposed add (25% faster on CPU)."""
    c2p = None if pos_key is None else torch.matmul(queries, pos_key.transpose(-1, -2))
    p2c = None if pos_query is None else torch.matmul(pos_query, keys.transpose(-1, -2))
    return c2p, p2c


class _GatherPositions(torch.autograd.Function):
    """``torch.gather`` whose backward keeps only the index and the table's shape. The built-in
    one keeps the whole [B, H, L, 2 span] table alive until backward, in every layer."""

    @staticmethod
    def forward(ctx, table, dim, index):
        ctx.save_for_backward(index)
        ctx.dim, ctx.table_shape = dim, table.shape
        return torch.gather(table, dim, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.table_shape).scatter_add_(ctx.dim, index, grad), None, None


def gather_positions(c2p: torch.Tensor, p2c: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """c2p [B, H, Lq, 2 span] and p2c [B, H, 2 span, Lk] gathered at index [..., Lq, Lk] and
    summed -> [B, H, Lq, Lk]; either table may be None (then nothing is gathered from it)."""
    table = c2p if c2p is not None else p2c
    index = index.expand(*table.shape[:2], *index.shape[-2:])
    position = None if c2p is None else _GatherPositions.apply(c2p, -1, index)
    if p2c is not None:
        gathered = _GatherPositions.apply(p2c, -2, index)
        position = gathered if position is None else position.add_(gathered)
    return position


def position_scores(queries, keys, pos_key, pos_query, index):
    """c2p + p2c gathered to [B, H, Lq, Lk], or None when the config has neither term; ``index``
    is [Lq, Lk], or [B, 1, Lq, Lk] when each row has its own queries."""
    c2p, p2c = position_tables(queries, keys, pos_key, pos_query)
    return None if c2p is None and p2c is None else gather_positions(c2p, p2c, index)
