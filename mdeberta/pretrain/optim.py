"""AdamW with decoupled weight decay on weight matrices only, and the warm-up + linear-decay schedule."""

from __future__ import annotations

import torch
from torch import nn

from .settings import PretrainSettings


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and LayerNorm weights (the parameters with fewer than two dimensions) are not
    decayed, as in BERT and the public DeBERTa code."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, settings: PretrainSettings, device: torch.device) -> torch.optim.AdamW:
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.learning_rate,
                             betas=tuple(settings.adam_betas), eps=settings.adam_eps, **fused)


def warmup_linear_decay(step: int, warmup_steps: int, max_steps: int) -> float:
    """The learning-rate multiplier: 0 -> 1 over the warm-up, then 1 -> 0 at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, settings: PretrainSettings):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear_decay(step, settings.warmup_steps, settings.max_steps))
