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
- ``compact``: the same GEMMs and gathers, with scores, softmax, dropout and attention x V in one
  autograd node whose backward is written out. It keeps only Q, K, V and the probabilities for
  backward, the dropout mask in their sign bits (PyTorch's math path also keeps the dropped
  probabilities: 4 bytes per score more), works in place with vectorised passes only, and draws
  the dropout mask from 16-bit lanes of random 64-bit words (a quarter of ``bernoulli_``'s
  generator calls). Meant for CPU training.
- ``fused``: ``compact`` with everything between its GEMMs in a C++ kernel (fused_attention.cpp,
  built on first use): one pass over each score row forward (gathers, mask, softmax, dropout)
  and one backward (softmax gradient, scatter-adds into the position tables), where compact
  makes about ten. It draws its dropout masks itself, from a seed (other masks than compact's
  for the same torch seed). CPU and float32 only; elsewhere, or where the kernel cannot be
  built, it runs compact's PyTorch code. Opaque to torch.compile.
- ``flex``: PyTorch's FlexAttention (compiled), the position terms and the padding mask in its
  ``score_mod``, read from the c2p/p2c tables, so that no [B, H, L, L] bias is materialised and
  the tables get their gradients inside the kernel's backward. Meant for CUDA; on CPU it runs
  inference only (FlexAttention has no CPU backward), and it has no attention-probability
  dropout, so it refuses training with a nonzero ``attention_probs_dropout_prob``.
- ``auto``: ``fused`` when training on CPU in float32 (autograd recording) and the kernel
  builds, ``compact`` for other CPU training and under torch.compile, ``sdpa`` everywhere else
  (``flex`` is not picked until it is measured faster than ``sdpa`` on a GPU).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from . import cpu_isa, fused_kernel
from .choices import BACKENDS
from .dropout import Dropout, dropout_seed, dropout_threshold


def resolve_backend(name: str) -> str:
    """Checks a backend name; ``auto`` stays ``auto`` and is decided per call (``pick_backend``)."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    return name


def pick_backend(name: str, queries: torch.Tensor) -> str:
    """``auto`` -> ``fused`` (or ``compact``) for CPU training, both measured faster and lighter
    than PyTorch's math path there; else ``sdpa`` (flash kernel for CPU inference, fused kernels
    on CUDA)."""
    if name != "auto":
        return name
    training = torch.is_grad_enabled() and queries.requires_grad
    if not training or queries.device.type != "cpu":
        return "sdpa"
    return "fused" if fused_kernel.load_for(queries) is not None and not torch.compiler.is_compiling() else "compact"


class FlexUnsupportedError(UserError, RuntimeError):
    pass


@functools.cache
def _compiled_flex_attention(device_type: str):
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
_CPU_FLEX_MIN_HEAD_SIZE = 24
_CPU_FLEX_PADDED_HEAD_SIZE = 32


def _pad_head_size_for_cpu_flex(queries, keys):
    size = queries.shape[-1]
    if queries.device.type != "cpu" or size >= _CPU_FLEX_MIN_HEAD_SIZE:
        return queries, keys
    return (F.pad(x, (0, _CPU_FLEX_PADDED_HEAD_SIZE - size)) for x in (queries, keys))


def _flex_trains_on(device: torch.device) -> bool:
    return device.type != "cpu"  # PyTorch's FlexAttention has no CPU backward


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


class _CompactAttention(torch.autograd.Function):
    """softmax(Q.K^T / scale + gathered c2p + gathered p2c, masked) -> dropout -> x V as one node,
    the position tables c2p = Q.PosK^T and p2c = PosQ.K^T included (PosK, PosQ: [H, 2 span, d],
    already divided by the scale; either may be None).

    Saved for backward: Q, K, V, PosK, PosQ and the probabilities, with the dropout mask stored
    in their sign bits (probabilities are >= 0, so a dropped one is kept negated): the mask
    costs no memory, the kept probabilities are a ``clamp`` away and the full ones an ``abs``.
    The 1/(1 - p) of dropout scales the [.., L, d] output and its gradient rather than the
    [.., L, L] probabilities. Masked scores get no gradient, as in the reference's masked_fill.
    The position tables' own gradients go straight into those of Q, K, PosK and PosQ (one
    accumulating GEMM each, where autograd's broadcast matmuls added copies and sums).

    With ``kernel`` (the fused backend), the C++ kernel does the work between the GEMMs."""

    @staticmethod
    def forward(ctx, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p, kernel=None):
        c2p = None if pos_key is None else torch.matmul(queries, pos_key.transpose(-1, -2))
        p2c = None if pos_query is None else torch.matmul(pos_query, keys.transpose(-1, -2))
        if kernel is None:
            probs, kept, keep_scale = _probabilities(queries, keys, c2p, p2c, index, mask, scale, dropout_p)
        else:
            index, mask = _kernel_layout(index, mask, queries.shape[0], queries.shape[-2], keys.shape[-2])
            probs, kept, keep_scale = _fused_probabilities(kernel, queries, keys, c2p, p2c, index, mask, scale,
                                                           dropout_p)
        del c2p, p2c
        context = torch.matmul(kept, values)
        del kept
        ctx.save_for_backward(queries, keys, values, pos_key, pos_query, probs, index, mask)
        ctx.scale, ctx.keep_scale, ctx.dropout, ctx.kernel = scale, keep_scale, dropout_p > 0, kernel
        return context.mul_(keep_scale) if ctx.dropout else context

    @staticmethod
    def backward(ctx, grad_context):
        queries, keys, values, pos_key, pos_query, probs, index, mask = ctx.saved_tensors
        if ctx.dropout:
            grad_context = grad_context * ctx.keep_scale
        grad = torch.matmul(grad_context, values.transpose(-1, -2))  # d(kept probabilities)
        kept = probs.clamp_min(0.0) if ctx.dropout else probs
        # X^T.Y is computed as (Y^T.X)^T: MKL's bmm with the long dimension transposed in its
        # first operand measured 30% slower here (A/B in one process: the xsmall step 5% faster).
        grad_values = torch.matmul(grad_context.transpose(-1, -2), kept).transpose(-1, -2)
        del kept
        grad_c2p, grad_p2c = _score_gradients(ctx, grad, probs, index, mask, pos_key, pos_query)
        del probs
        # d(Q) = d(scores).K / scale + d(c2p).PosK and d(K)^T = Q^T.d(scores) / scale + PosQ^T.d(p2c)
        # (K's gradient built transposed, as above), each position part first, the score part
        # accumulated onto it.
        rows, length, width, size = queries.shape[:-2].numel(), grad.shape[-2], grad.shape[-1], queries.shape[-1]
        flat_grad = grad.view(rows, length, width)
        if grad_c2p is None:
            grad_queries = torch.matmul(grad, keys).mul_(1.0 / ctx.scale)
        else:
            grad_queries = torch.matmul(grad_c2p, pos_key)
            grad_queries.view(rows, length, size).baddbmm_(flat_grad, keys.view(rows, width, size),
                                                           alpha=1.0 / ctx.scale)
        if grad_p2c is None:
            grad_keys_t = torch.matmul(queries.transpose(-1, -2), grad).mul_(1.0 / ctx.scale)
        else:
            grad_keys_t = torch.matmul(pos_query.transpose(-1, -2), grad_p2c)
            grad_keys_t.view(rows, size, width).baddbmm_(queries.view(rows, length, size).transpose(1, 2),
                                                         flat_grad, alpha=1.0 / ctx.scale)
        # d(PosK) = sum over the batch of d(c2p)^T.Q, d(PosQ) = sum of d(p2c).K
        grad_pos_key = None if grad_c2p is None else \
            torch.matmul(queries.transpose(-1, -2), grad_c2p).sum(0).transpose(-1, -2)
        grad_pos_query = None if grad_p2c is None else torch.matmul(grad_p2c, keys).sum(0)
        return (grad_queries, grad_keys_t.transpose(-1, -2), grad_values, grad_pos_key, grad_pos_query,
                None, None, None, None, None)


def _score_gradients(ctx, grad, probs, index, mask, pos_key, pos_query):
    """In place: ``grad`` (of the kept probabilities) becomes that of the scores; returns the
    gradients of the c2p [B, H, Lq, 2 span] and p2c [B, H, 2 span, Lk] tables (None for an absent one)."""
    batch_heads, length, width = grad.shape[:2], grad.shape[-2], grad.shape[-1]
    tables = [table for table in (pos_key, pos_query) if table is not None]
    span = tables[0].shape[-2] if tables else 0
    c2p_shape, p2c_shape = (*batch_heads, length, span), (*batch_heads, span, width)
    if ctx.kernel is None:
        _softmax_backward(grad, probs, mask, ctx.dropout)
        index = index.expand(grad.shape)
        grad_c2p = None if pos_key is None else grad.new_zeros(c2p_shape).scatter_add_(-1, index, grad)
        grad_p2c = None if pos_query is None else grad.new_zeros(p2c_shape).scatter_add_(-2, index, grad)
        return grad_c2p, grad_p2c
    grad_c2p, grad_p2c = ctx.kernel.score_gradients(grad.view(-1, length, width), probs.view(-1, length, width),
                                                    index, batch_heads[1], mask, span,
                                                    pos_key is not None, pos_query is not None)
    return (None if pos_key is None else grad_c2p.view(c2p_shape),
            None if pos_query is None else grad_p2c.view(p2c_shape))


def _probabilities(queries, keys, c2p, p2c, index, mask, scale, dropout_p):
    """Compact's forward between the GEMMs, in PyTorch: the signed probabilities, the kept ones
    and the dropout's 1 / (1 - rate)."""
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


def _softmax_backward(grad, probs, mask, dropout: bool) -> None:
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


def _kernel_layout(index, mask, batch: int, length: int, width: int):
    """The index as contiguous int32 [1 or B, Lq, Lk] and the mask as contiguous bool [B, Lq, Lk]."""
    index = index.reshape(-1, length, width).to(torch.int32).contiguous()
    if mask is not None:
        mask = mask.expand(batch, 1, length, width).reshape(batch, length, width).contiguous()
    return index, mask


def _fused_probabilities(kernel, queries, keys, c2p, p2c, index, mask, scale, dropout_p):
    """``_probabilities`` by the fused kernel; its dropout mask is drawn in the kernel (``dropout_seed``)."""
    heads, length, width = queries.shape[1], queries.shape[-2], keys.shape[-2]
    scores = torch.matmul(queries, keys.transpose(-1, -2))
    seed, threshold, rate = dropout_seed(dropout_p) if dropout_p > 0 else (0, 0, 0.0)
    kept = kernel.probabilities(
        scores.view(-1, length, width), 1.0 / scale,
        None if c2p is None else c2p.reshape(-1, length, c2p.shape[-1]),
        None if p2c is None else p2c.reshape(-1, p2c.shape[-2], width),
        index, heads, mask, seed, threshold)
    return scores, kept.view_as(scores), 1.0 / (1.0 - rate)


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
        self.pos_dropout = Dropout(config.hidden_dropout_prob)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.scale_factor = 1 + len(self.pos_att_type & {"c2p", "p2c"})
        self.backend = resolve_backend(backend)
        # sqrt(d x factor) built in float32 then rounded to each dtype, as the reference does
        # (sqrt(192) -> 13.875 in bf16); plain floats, so a compiled forward does not break on .item().
        exact = torch.tensor(self.head_size * self.scale_factor, dtype=torch.float, device="cpu").sqrt()
        self._scales = {dtype: exact.to(dtype).item()
                        for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16)}

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_size).transpose(-3, -2)

    def forward(self, hidden_states, mask, rel_index, rel_embeddings, query_states=None):
        """``mask``: bool [B, 1, Lq, Lk], True where query i may attend to key j, or None when
        nothing is padded. ``query_states`` (Enhanced Mask Decoder) replaces the queries; keys
        and values still come from ``hidden_states``."""
        queries = self._split_heads(self.query_proj(hidden_states if query_states is None else query_states))
        keys = self._split_heads(self.key_proj(hidden_states))
        values = self._split_heads(self.value_proj(hidden_states))
        scale = self._scales[queries.dtype]
        rel_embeddings = self.pos_dropout(rel_embeddings)
        index = rel_index.unsqueeze(-3) if rel_index.dim() == 3 else rel_index
        backend = pick_backend(self.backend, queries)
        if backend == "eager":
            context = self._eager(queries, keys, values, index, rel_embeddings, mask, scale)
        elif backend == "sdpa":
            context = self._sdpa(queries, keys, values, index, rel_embeddings, mask, scale)
        elif backend == "flex":
            context = self._flex(queries, keys, values, index, rel_embeddings, mask, scale)
        else:
            queries, keys, values = queries.contiguous(), keys.contiguous(), values.contiguous()
            pos_key, pos_query = self._position_projections(rel_embeddings, scale)
            fits = dropout_threshold(self.dropout.p) < 65536  # a rate of 1 once rounded: compact's code
            kernel = fused_kernel.load_for(queries) if backend == "fused" and fits else None
            context = _CompactAttention.apply(queries, keys, values, pos_key, pos_query, index, mask, scale,
                                              self.dropout.p if self.training else 0.0, kernel)
        return context.transpose(-3, -2).flatten(-2)

    def _position_projections(self, rel_embeddings, scale=None):
        """PosK and PosQ [H, 2 span, d]: the relative embeddings through the layer's own key and
        query projections (None when the config leaves c2p or p2c out). A ``scale`` divides
        these small tables rather than the [B, H, L, 2 span] products."""
        pos_key = pos_query = None
        if "c2p" in self.pos_att_type:
            pos_key = self._split_heads(self.key_proj(rel_embeddings))
        if "p2c" in self.pos_att_type:
            pos_query = self._split_heads(self.query_proj(rel_embeddings))
        if scale is not None:
            pos_key, pos_query = (None if table is None else table / scale for table in (pos_key, pos_query))
        return pos_key, pos_query

    def _position_tables(self, queries, keys, rel_embeddings, scale=None):
        """c2p = Q.PosK^T [B, H, Lq, 2 span] and p2c = PosQ.K^T [B, H, 2 span, Lk] (None when the
        config leaves one out). p2c is built transposed so that its gather runs along the
        positions and lands in [Lq, Lk] order, with no transposed add (25% faster on CPU)."""
        pos_key, pos_query = self._position_projections(rel_embeddings, scale)
        c2p = None if pos_key is None else torch.matmul(queries, pos_key.transpose(-1, -2))
        p2c = None if pos_query is None else torch.matmul(pos_query, keys.transpose(-1, -2))
        return c2p, p2c

    def _position_scores(self, queries, keys, index, rel_embeddings, scale=None):
        """c2p + p2c gathered to [B, H, Lq, Lk]; ``index`` is [Lq, Lk], or [B, 1, Lq, Lk] when
        each row has its own queries."""
        c2p, p2c = self._position_tables(queries, keys, rel_embeddings, scale)
        return None if c2p is None and p2c is None else gather_positions(c2p, p2c, index)

    def _eager(self, queries, keys, values, index, rel_embeddings, mask, scale):
        """The reference order of operations (transformers'): K is scaled before Q.K^T."""
        scores = torch.matmul(queries, keys.transpose(-1, -2) / scale)
        position = self._position_scores(queries, keys, index, rel_embeddings)
        if position is not None:
            scores = scores + position / scale
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = self.dropout(torch.softmax(scores, dim=-1))
        return torch.matmul(probs, values)

    def _sdpa(self, queries, keys, values, index, rel_embeddings, mask, scale):
        bias = self._position_scores(queries, keys, index, rel_embeddings, scale)
        if mask is not None:
            # finfo.min rather than -inf keeps fully padded query rows finite: they attend
            # uniformly, as in the reference, instead of producing NaN.
            fill = torch.finfo(queries.dtype).min
            bias = torch.where(mask, 0.0, fill).to(queries.dtype) if bias is None else bias.masked_fill(~mask, fill)
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=bias, scale=1.0 / scale,
            dropout_p=self.dropout.p if self.training else 0.0)

    def _flex(self, queries, keys, values, index, rel_embeddings, mask, scale):
        """FlexAttention with score_mod = + c2p[b, h, i, r] + p2c[b, h, r, j], r = index[i, j];
        masked scores become finfo.min, as in the reference (fully padded rows attend uniformly)."""
        if self.training and self.dropout.p > 0:
            raise FlexUnsupportedError(
                f"the flex attention backend has no attention-probability dropout, and this model trains with "
                f"attention_probs_dropout_prob={self.dropout.p}: choose another backend (auto, sdpa) or set that "
                f"dropout to 0")
        if not _flex_trains_on(queries.device) and torch.is_grad_enabled() and queries.requires_grad:
            raise FlexUnsupportedError("the flex attention backend cannot train on CPU (FlexAttention has no CPU "
                                       "backward): choose auto, fused or compact for CPU training")
        c2p, p2c = self._position_tables(queries, keys, rel_embeddings, scale)
        per_batch_index = index.dim() == 4  # [B, 1, Lq, Lk]: the Enhanced Mask Decoder's own queries
        fill = torch.finfo(torch.float32).min

        def disentangled(score, b, h, i, j):
            r = index[b, 0, i, j] if per_batch_index else index[i, j]
            if c2p is not None:
                score = score + c2p[b, h, i, r]
            if p2c is not None:
                score = score + p2c[b, h, r, j]
            return score if mask is None else torch.where(mask[b, 0, i, j], score, fill)

        flex_attention = _compiled_flex_attention(queries.device.type)
        queries, keys = _pad_head_size_for_cpu_flex(queries, keys)
        return flex_attention(queries, keys, values, score_mod=disentangled, scale=1.0 / scale)
