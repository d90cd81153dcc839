"""Random initialisation of zoo models: the libraries' own, or a seeded cheap one for big shapes.

The libraries' initialisers (kaiming/trunc-normal per layer, transformers' ``_init_weights``)
take minutes at SD-1.5 sizes on two cores; the zoo's weights only need to be deterministic and
numerically tame. So at big shapes a model is constructed with initialisation switched off
(transformers' ``no_init_weights``, which also covers ``torch.nn.init`` for diffusers and plain
torch modules) and every parameter is then filled from one seeded generator: matrices and
kernels uniform with std 1/sqrt(fan_in) (activations keep their scale through the layers),
1-D weights (norm scales) 1, biases 0. Buffers keep what their constructors wrote.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def seeded_fill(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter of ``module`` in place from a generator seeded with ``seed``; returns it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2:
                bound = (3.0 / (param.numel() // param.shape[0])) ** 0.5
                param.uniform_(-bound, bound, generator=generator)
            elif name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()
    return module


def random_module(factory: Callable[[], nn.Module], seed: int, fast: bool) -> nn.Module:
    """``factory()`` under ``seed`` in eval mode: the libraries' init (``fast`` False, the tiny
    zoo's weights) or construction without init followed by :func:`seeded_fill` (``fast`` True)."""
    if not fast:
        torch.manual_seed(seed)
        return factory().eval()
    from transformers.initialization import no_init_weights

    with no_init_weights():
        module = factory()
    return seeded_fill(module, seed).eval()
