"""``eager``: the reference. Materialises the scores in transformers' order of operations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .positions import position_scores


class EagerBackend(nn.Module):
    def forward(self, queries, keys, values, pos_key, pos_query, index, mask, scale, dropout_p):
        """K is scaled before Q.K^T and the gathered position terms after, as transformers does."""
        scores = torch.matmul(queries, keys.transpose(-1, -2) / scale)
        position = position_scores(queries, keys, pos_key, pos_query, index)
        if position is not None:
            scores = scores + position / scale
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1)
        if dropout_p > 0:
            probs = F.dropout(probs, dropout_p)
        return torch.matmul(probs, values)
