"""AdamW as both training loops (pretrain, xnli) use it."""

from __future__ import annotations

import torch
from torch import nn


def adamw(model: nn.Module, lr: float, weight_decay: float, device: torch.device, betas=(0.9, 0.999),
          eps: float = 1e-8, fused: bool | None = None) -> torch.optim.AdamW:
    """Decoupled weight decay on weight matrices only: biases and LayerNorm weights (the parameters
    with fewer than two dimensions) are not decayed, as in BERT and the public DeBERTa code.
    Fused on CUDA unless ``fused`` says otherwise."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=device.type == "cuda" if fused is None else fused)
