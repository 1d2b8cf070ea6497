"""``sdpa``: the two position terms gathered once into an additive bias that also carries the
padding mask, then ``torch.nn.functional.scaled_dot_product_attention``. On CUDA that runs the
memory-efficient kernel (bias gradient and dropout included); on CPU, inference runs the flash
kernel and training PyTorch's math path (the CPU kernels give no gradient for the bias)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .positions import position_scores, scaled_projections


class SdpaBackend(nn.Module):
    def forward(self, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p):
        bias = position_scores(queries, keys, *scaled_projections(pos_key, pos_query, scale), index)
        if mask is not None:
            # finfo.min rather than -inf keeps fully padded query rows finite: they attend
            # uniformly, as in the reference, instead of producing NaN.
            fill = torch.finfo(queries.dtype).min
            bias = torch.where(mask, 0.0, fill).to(queries.dtype) if bias is None else bias.masked_fill(~mask, fill)
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias, scale=1.0 / scale,
                                              dropout_p=dropout_p)
