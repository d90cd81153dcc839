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


def pair_distance(a: np.ndarray, b: np.ndarray, background_a: np.ndarray, background_b: np.ndarray) -> float | None:
    """Mean |a - b| over the pixels that are background in both (None: no such pixel)."""
    shared = background_a & background_b
    if not shared.any():
        return None
    return float(np.abs(a[shared].astype(np.float64) - b[shared]).mean() / 255.0)


def cross_pair_distances(images: list[np.ndarray], backgrounds: list[np.ndarray]) -> np.ndarray:
    """float64 [N, N]: :func:`pair_distance` between every two products' images; NaN on the diagonal
    and where two products share no background. Row k's mean is product k's distance to the others."""
    if len(images) != len(backgrounds):
        raise ValueError(f"images ({len(images)}) and backgrounds ({len(backgrounds)}): one background per image")
    matrix = np.full((len(images), len(images)), np.nan)
    for a, b in itertools.combinations(range(len(images)), 2):
        value = pair_distance(images[a], images[b], backgrounds[a], backgrounds[b])
        matrix[a, b] = matrix[b, a] = np.nan if value is None else value
    return matrix


def cross_product_distance(images: list[np.ndarray], backgrounds: list[np.ndarray], max_pairs: int = 2000,
                           seed: int = 0) -> float | None:
    """Mean over pairs of products of :func:`pair_distance`.

    ``images``: one uint8 [H, W, 3] per product (the same seed index for all); ``backgrounds``: its
    bool [H, W] background. With more than ``max_pairs`` pairs, ``max_pairs`` of them drawn with
    ``seed`` (the same pairs for every model compared on the same products). None under 2 products.
    """
    if len(images) != len(backgrounds):
        raise ValueError(f"images ({len(images)}) and backgrounds ({len(backgrounds)}): one background per image")
    pairs = list(itertools.combinations(range(len(images)), 2))
    if len(pairs) > max_pairs:
        chosen = np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False)
        pairs = [pairs[i] for i in sorted(chosen)]
    distances = [pair_distance(images[a], images[b], backgrounds[a], backgrounds[b]) for a, b in pairs]
    distances = [d for d in distances if d is not None]
    return float(np.mean(distances)) if distances else None


def fidelity_shares(readings: list[dict]) -> dict:
    """Per attribute, the share of the images read for it that match their prompt (``n``: how many were
    read; the table only where the prompt names one), and ``faithful``: the share matching in every
    attribute read. ``readings``: what :func:`rfad.trainer.data.fidelity.read_fidelity` returned per image."""
    out = {}
    for name in (*ATTRIBUTES, "faithful"):
        named = [bool(r[name]) for r in readings if r[name] is not None]
        out[name] = {"share": float(np.mean(named)) if named else None, "n": len(named)}
    return out
