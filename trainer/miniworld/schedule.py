"""The optimiser every miniature-world model trains with: AdamW, linear warm-up, cosine decay to 0."""

from __future__ import annotations

import torch


def make_optimiser(parameters, lr: float, steps: int, warmup_fraction: float = 0.05, weight_decay: float = 0.01):
    """(AdamW, its learning-rate scheduler) for ``steps`` optimiser steps; call ``scheduler.step()`` after each."""
    from diffusers.optimization import get_scheduler

    if lr <= 0:
        raise ValueError(f"learning rate: must be > 0, got {lr}")
    optimiser = torch.optim.AdamW([p for p in parameters if p.requires_grad], lr=lr, weight_decay=weight_decay)
    scheduler = get_scheduler("cosine", optimiser, num_warmup_steps=int(warmup_fraction * steps),
                              num_training_steps=max(steps, 1))
    return optimiser, scheduler
