"""Disentangled self-attention (DeBERTa) with interchangeable backends.

score(i, j) = (q_i . k_j + q_i . PosK[r(i, j)] + k_j . PosQ[r(i, j)]) / sqrt(3 d)

where r(i, j) = clamp(bucket(i - j) + span, 0, 2 span - 1) indexes the LayerNorm'd relative
embeddings projected by the layer's own query/key projections (shared attention keys).

The layer projects Q, K, V, PosK and PosQ and hands them to a backend, one module each:
``eager`` (the reference), ``sdpa`` (PyTorch's scaled_dot_product_attention with a position
bias), ``compact`` (one autograd node with a written-out backward, for CPU training), ``fused``
(compact with a C++ kernel between its GEMMs) and ``flex`` (FlexAttention, meant for CUDA);
``positions`` holds what they share. Every backend is called the same way,

    backend(queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p) -> context

Q [B, H, Lq, d], K and V [B, H, Lk, d]; PosK and PosQ [H, 2 span, d], not yet divided by
``scale`` (None where the config leaves c2p or p2c out); ``index`` [Lq, Lk] or [B, 1, Lq, Lk]
into the 2 span positions; ``mask`` bool [B, 1, Lq, Lk] or None; ``dropout_p`` the
attention-probability dropout, 0 outside training; the context is [B, H, Lq, d].

``auto`` picks per call: ``fused`` when training on CPU in float32 (autograd recording) and the
kernel builds, ``compact`` for other CPU training and under torch.compile, ``sdpa`` everywhere
else (``flex`` is not picked until it is measured faster than ``sdpa`` on a GPU).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import fused_kernel
from ..dropout import Dropout
from .compact import CompactBackend
from .eager import EagerBackend
from .flex import FlexBackend, FlexUnsupportedError
from .fused import FusedBackend
from .positions import log_bucket, relative_index
from .sdpa import SdpaBackend

__all__ = ["BACKEND_MODULES", "DisentangledSelfAttention", "FlexUnsupportedError", "log_bucket", "pick_backend",
           "relative_index", "resolve_backend"]

# Stateless, so one instance of each serves every layer; the names are those of choices.BACKENDS.
BACKEND_MODULES: dict[str, nn.Module] = {
    "eager": EagerBackend(), "sdpa": SdpaBackend(), "compact": CompactBackend(), "fused": FusedBackend(),
    "flex": FlexBackend(),
}


def resolve_backend(name: str) -> str:
    """Checks a backend name; ``auto`` stays ``auto`` and is decided per call (``pick_backend``)."""
    if name != "auto" and name not in BACKEND_MODULES:
        raise ValueError(f"unknown attention backend {name!r}; choose one of auto, {', '.join(BACKEND_MODULES)}")
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
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)  # its rate, for the backends
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
        pos_key, pos_query = self._position_projections(self.pos_dropout(rel_embeddings))
        index = rel_index.unsqueeze(-3) if rel_index.dim() == 3 else rel_index
        attend = BACKEND_MODULES[pick_backend(self.backend, queries)]
        context = attend(queries, keys, values, pos_key, pos_query, index, mask, self._scales[queries.dtype],
                         self.dropout.p if self.training else 0.0)
        return context.transpose(-3, -2).flatten(-2)

    def _position_projections(self, rel_embeddings):
        """PosK and PosQ [H, 2 span, d]: the relative embeddings through the layer's own key and
        query projections (None when the config leaves c2p or p2c out)."""
        pos_key = self._split_heads(self.key_proj(rel_embeddings)) if "c2p" in self.pos_att_type else None
        pos_query = self._split_heads(self.query_proj(rel_embeddings)) if "p2c" in self.pos_att_type else None
        return pos_key, pos_query
