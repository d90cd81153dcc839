"""Sample inputs of a component: random tensors of its spec's shapes, in the ranges the loop
feeds, and the image sides a checkpoint's graphs accept.

The export traces and checks graphs with them (:mod:`rfad.export.parity`), and the benchmarks
time and measure graphs with them; like the specs, they need no model.
"""

from __future__ import annotations

import numpy as np

from rfad.components.specs import ComponentSpec, ModelFacts


def pixel_multiple(facts: ModelFacts) -> int:
    """Image sides must be multiples of this: the latent is halved down to the coarsest residual."""
    return facts.latent_factor * max([facts.mid_residual[1]] + [f for _, f in facts.down_residuals])


def check_side(facts: ModelFacts) -> int:
    """Image side of the export trace and the parity cases: small, and valid for every residual."""
    return max(64, 2 * pixel_multiple(facts))


def sample_inputs(spec: ComponentSpec, batch: int, height: int, width: int, seed: int = 0,
                  vocab: int = 300) -> dict[str, np.ndarray]:
    """Random inputs of the spec's shapes by tensor name, in the ranges the loop feeds (ids in the
    vocabulary, timesteps in [0, 1000), images in [0, 1], masks with padding after the first tokens)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in spec.inputs:
        shape = spec.shape_of(tensor, batch, height, width)
        if tensor.role == "input_ids":
            arrays[tensor.name] = rng.integers(3, vocab, shape).astype(np.int64)
        elif tensor.dtype == "int64":  # attention / caption masks
            mask = np.ones(shape, np.int64)
            mask[:, max(2, shape[1] // 2):] = 0
            arrays[tensor.name] = mask
        elif tensor.role == "timestep":
            arrays[tensor.name] = rng.uniform(0, 999, shape).astype(np.float32)
        elif tensor.role == "conditioning_scale":
            arrays[tensor.name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            arrays[tensor.name] = rng.random(shape, dtype=np.float32)
    return arrays
