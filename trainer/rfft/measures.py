"""What catches a tuned generator cheating: diversity across seeds and across products, prompt fidelity.

RFFT optimises what the judge rewards. A ControlNet can raise that reward by painting one safe
background for everything (the paper's "repetitive plain backgrounds"), or by ignoring the prompt.
Three measures, torch-free (numpy; prompt fidelity also OpenCV through the oracle):

- :func:`seed_distance`: images of ONE product from different seeds; near 0 when the seed no longer
  matters (collapse across seeds);
- :func:`cross_product_distance`: the first image of every product, compared across products over
  the background both share; near 0 when every request gets the same background whatever its
  product and prompt (collapse across products, which seed diversity alone does not see);
- :func:`fidelity_shares`: the share of images whose scene shows what the prompt names (wall colour,
  table, reference object), read back by :mod:`rfad.trainer.data.fidelity` (miniature-world
  prompts only).

Distances are mean |a - b| over the pixels compared, pixels in [0, 1].
"""

from __future__ import annotations

import itertools

import numpy as np

from rfad.trainer.data.fidelity import ATTRIBUTES


def seed_distance(images: list[np.ndarray], background: np.ndarray) -> float:
    """Mean over pairs of mean |a - b| over ``background`` (bool [H, W]): images uint8 [H, W, 3] of one
    product from different seeds."""
    pixels = [image[background].astype(np.float64) / 255.0 for image in images]
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(pixels, 2)]))


def cross_product_distance(images: list[np.ndarray], backgrounds: list[np.ndarray], max_pairs: int = 2000,
                           seed: int = 0) -> float | None:
    """Mean over pairs of products of mean |a - b| over the pixels that are background in both.

    ``images``: one uint8 [H, W, 3] per product (the same seed index for all); ``backgrounds``: its
    bool [H, W] background. With more than ``max_pairs`` pairs, ``max_pairs`` of them drawn with
    ``seed`` (the same pairs for every model compared on the same products). None under 2 products.
    """
    if len(images) != len(backgrounds):
        raise ValueError(f"images ({len(images)}) and backgrounds ({len(backgrounds)}): one background per image")
    pairs = list(itertools.combinations(range(len(images)), 2))
    if not pairs:
        return None
    if len(pairs) > max_pairs:
        chosen = np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False)
        pairs = [pairs[i] for i in sorted(chosen)]
    distances = []
    for a, b in pairs:
        shared = backgrounds[a] & backgrounds[b]
        if shared.any():
            distances.append(np.abs(images[a][shared].astype(np.float64) - images[b][shared]).mean() / 255.0)
    return float(np.mean(distances)) if distances else None


def fidelity_shares(readings: list[dict]) -> dict:
    """Per attribute, the share of the images whose prompt names it that show it (``n``: how many
    name it), and ``faithful``: the share showing everything named. ``readings``: what
    :func:`rfad.trainer.data.fidelity.read_fidelity` returned per image."""
    out = {}
    for name in (*ATTRIBUTES, "faithful"):
        named = [bool(r[name]) for r in readings if r[name] is not None]
        out[name] = {"share": float(np.mean(named)) if named else None, "n": len(named)}
    return out
