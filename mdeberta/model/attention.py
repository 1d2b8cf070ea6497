"""Disentangled self-attention (DeBERTa) with interchangeable backends.

score(i, j) = (q_i . k_j + q_i . PosK[r(i, j)] + k_j . PosQ[r(i, j)]) / sqrt(3 d)

where r(i, j) = clamp(bucket(i - j) + span, 0, 2 span - 1) indexes the LayerNorm'd relative
embeddings projected by the layer's own query/key projections (shared attention keys).

Backends:
- ``eager``: the reference. Materialises the scores, as transformers does.
- ``sdpa``: the two position terms are GEMMs against the 2*span position table ([B, H, L, 2 span]),
  gathered once into an additive bias that also carries the padding mask, then
  ``torch.nn.functional.scaled_dot_product_attention``. On CUDA that runs the memory-efficient
  kernel (bias gradient and dropout included); on CPU, inference runs the flash kernel and
  training PyTorch's math path (the CPU kernels give no gradient for the bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("eager", "sdpa")


def resolve_backend(name: str) -> str:
    """``auto`` -> the fastest backend available here."""
    if name == "auto":
        return "sdpa"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    return name


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


class _GatherPositions(torch.autograd.Function):
    """``torch.gather`` whose backward keeps only the index and the table's shape. The built-in
    one keeps the whole [B, H, L, 2 span] table alive until backward, in every layer."""

    @staticmethod
    def forward(ctx, table, index):
        ctx.save_for_backward(index)
        ctx.table_shape = table.shape
        return torch.gather(table, -1, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        table_grad = grad.new_zeros(ctx.table_shape).scatter_add_(-1, index, grad)
        return table_grad, None


def gather_positions(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table [B, H, Lq, 2 span] gathered at index [..., Lq, Lk] -> [B, H, Lq, Lk]."""
    return _GatherPositions.apply(table, index.expand(*table.shape[:2], *index.shape[-2:]))


class DisentangledSelfAttention(nn.Module):
    """Parameter names follow transformers' ``DisentangledSelfAttention`` so state dicts load
    unchanged. Only shared attention keys (DeBERTaV3) are implemented."""

    def __init__(self, config, backend: str = "auto"):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}")
        if not getattr(config, "share_att_key", False):
            raise ValueError("only share_att_key=True (DeBERTaV3) is supported")
        self.heads = config.num_attention_heads
        self.head_size = getattr(config, "attention_head_size", config.hidden_size // config.num_attention_heads)
        inner = self.heads * self.head_size
        self.query_proj = nn.Linear(config.hidden_size, inner)
        self.key_proj = nn.Linear(config.hidden_size, inner)
        self.value_proj = nn.Linear(config.hidden_size, inner)
        self.pos_att_type = set(config.pos_att_type or [])
        self.pos_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.scale_factor = 1 + len(self.pos_att_type & {"c2p", "p2c"})
        self.backend = resolve_backend(backend)
        self._scales: dict[torch.dtype, float] = {}

    def _scale(self, dtype: torch.dtype) -> float:
        """sqrt(d x factor) built in float32 then rounded to ``dtype``, as the reference does
        (sqrt(192) -> 13.875 in bf16); once per dtype, not per forward."""
        if dtype not in self._scales:
            exact = torch.tensor(self.head_size * self.scale_factor, dtype=torch.float).sqrt()
            self._scales[dtype] = exact.to(dtype).item()
        return self._scales[dtype]

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_size).transpose(-3, -2)

    def forward(self, hidden_states, mask, rel_index, rel_embeddings, query_states=None):
        """``mask``: bool [B, 1, Lq, Lk], True where query i may attend to key j, or None when
        nothing is padded. ``query_states`` (Enhanced Mask Decoder) replaces the queries; keys
        and values still come from ``hidden_states``."""
        queries = self._split_heads(self.query_proj(hidden_states if query_states is None else query_states))
        keys = self._split_heads(self.key_proj(hidden_states))
        values = self._split_heads(self.value_proj(hidden_states))
        scale = self._scale(queries.dtype)
        rel_embeddings = self.pos_dropout(rel_embeddings)
        if self.backend == "eager":
            context = self._eager(queries, keys, values, rel_index, rel_embeddings, mask, scale)
        else:
            context = self._sdpa(queries, keys, values, rel_index, rel_embeddings, mask, scale)
        return context.transpose(-3, -2).flatten(-2)

    def _position_scores(self, queries, keys, rel_index, rel_embeddings, scale=None):
        """c2p + p2c as [B, H, Lq, Lk]: two GEMMs against the position table, then gathers.
        ``rel_index`` is [Lq, Lk], or [B, Lq, Lk] when each row has its own queries. A ``scale``
        divides the small [H, 2 span, d] tables rather than the [B, H, Lq, Lk] result."""
        index = rel_index.unsqueeze(-3) if rel_index.dim() == 3 else rel_index
        position = None
        if "c2p" in self.pos_att_type:
            pos_key = self._split_heads(self.key_proj(rel_embeddings))  # [H, 2 span, d]
            if scale is not None:
                pos_key = pos_key / scale
            c2p = torch.matmul(queries, pos_key.transpose(-1, -2))  # [B, H, Lq, 2 span]
            position = gather_positions(c2p, index)
        if "p2c" in self.pos_att_type:
            pos_query = self._split_heads(self.query_proj(rel_embeddings))
            if scale is not None:
                pos_query = pos_query / scale
            p2c = torch.matmul(keys, pos_query.transpose(-1, -2))  # [B, H, Lk, 2 span]
            p2c = gather_positions(p2c, index.transpose(-1, -2)).transpose(-1, -2)
            position = p2c if position is None else position.add_(p2c)
        return position

    def _eager(self, queries, keys, values, rel_index, rel_embeddings, mask, scale):
        """The reference order of operations (transformers'): K is scaled before Q.K^T."""
        scores = torch.matmul(queries, keys.transpose(-1, -2) / scale)
        position = self._position_scores(queries, keys, rel_index, rel_embeddings)
        if position is not None:
            scores = scores + position / scale
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = self.dropout(torch.softmax(scores, dim=-1))
        return torch.matmul(probs, values)

    def _sdpa(self, queries, keys, values, rel_index, rel_embeddings, mask, scale):
        bias = self._position_scores(queries, keys, rel_index, rel_embeddings, scale)
        if mask is not None:
            # finfo.min rather than -inf keeps fully padded query rows finite: they attend
            # uniformly, as in the reference, instead of producing NaN.
            fill = torch.finfo(queries.dtype).min
            bias = torch.where(mask, 0.0, fill).to(queries.dtype) if bias is None else bias.masked_fill(~mask, fill)
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=bias, scale=1.0 / scale,
            dropout_p=self.dropout.p if self.training else 0.0)
