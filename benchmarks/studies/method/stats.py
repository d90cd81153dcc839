"""Intervals and paired comparisons for the method's tables, by product (torch-free: numpy only).

Images of one product share its shape, colour and prompt, so they are not independent draws: every
interval here resamples PRODUCTS with replacement (the cluster bootstrap) and recomputes the
statistic over all images of the drawn products. Comparisons of two arms on the same images
(two judges on one test split, two loop arms on the same requests) resample the products once
for both arms, so what the products share cancels out (a paired bootstrap), and a two-sided p
value comes from the same draws.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

BOOTSTRAP_DRAWS = 2000
LEVEL = 0.95


def _groups(products: Sequence[str]) -> list[np.ndarray]:
    """Indices of each product's items, in first-seen order."""
    index: dict[str, list[int]] = {}
    for i, product in enumerate(products):
        index.setdefault(product, []).append(i)
    return [np.asarray(items) for items in index.values()]


def _draws(products: Sequence[str], draws: int, seed: int):
    """``draws`` resamples of the items: each the items of len(products) products drawn with replacement."""
    groups = _groups(products)
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        picked = rng.integers(len(groups), size=len(groups))
        yield np.concatenate([groups[g] for g in picked])


def bootstrap_interval(statistic: Callable[[np.ndarray], float | None], products: Sequence[str],
                       draws: int = BOOTSTRAP_DRAWS, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """(low, high) percentile interval of ``statistic(indices)`` over product resamples; resamples
    where the statistic is undefined (None, e.g. an AP without positives) are left out."""
    values = [v for v in (statistic(items) for items in _draws(products, draws, seed)) if v is not None]
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(statistic_a: Callable[[np.ndarray], float | None],
                      statistic_b: Callable[[np.ndarray], float | None], products: Sequence[str],
                      draws: int = BOOTSTRAP_DRAWS, seed: int = 0, level: float = LEVEL) -> dict:
    """A - B on the same items: the point difference, its paired percentile interval, and a two-sided
    bootstrap p value (twice the share of resamples on the far side of 0, at most 1)."""
    every = np.arange(len(products))
    point = statistic_a(every) - statistic_b(every)
    differences = []
    for items in _draws(products, draws, seed):
        a, b = statistic_a(items), statistic_b(items)
        if a is not None and b is not None:
            differences.append(a - b)
    differences = np.asarray(differences)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    p = min(1.0, 2 * min(np.mean(differences <= 0), np.mean(differences >= 0)))
    return {"difference": float(point), "low": float(low), "high": float(high), "p": float(p),
            "draws": len(differences)}


def share(values: Sequence[bool]) -> Callable[[np.ndarray], float]:
    """The statistic "share of True among the items"."""
    array = np.asarray(values, dtype=np.float64)
    return lambda items: float(array[items].mean())


def mean_of(values: Sequence[float]) -> Callable[[np.ndarray], float]:
    array = np.asarray(values, dtype=np.float64)
    return lambda items: float(array[items].mean())
