"""Recurrent Generation's arms from per-image records: one attempt, up to N with a judge, up to N with the oracle.

The loop (:func:`rfad.pipeline.generate.generate`, one candidate per attempt) gives attempt a of a
request the seed ``seed + a - 1`` and stops at the first candidate whose p(Available) reaches the
threshold; when none does within ``max_attempts``, it returns the candidate of highest p (the first
of equal ones). RF-mini generates a product's images with exactly those seeds (``seed, seed + 1,
...``), so the images of one test product ARE the attempts of one request, and every arm, with any
judge, is read off the same images: the arms are paired by construction, and a new judge needs no
new generation. tests/test_method_loop.py checks the reading against ``generate`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

AVAILABLE = "Available"


@dataclass(frozen=True)
class LoopOutcome:
    """One request through the loop: the attempts it used, the attempt it returned (0-based), and the
    returned image's oracle label."""

    attempts: int
    returned: int
    oracle: str

    @property
    def available(self) -> bool:
        return self.oracle == AVAILABLE


def run_loop(p_available: Sequence[float], oracle: Sequence[str], threshold: float, max_attempts: int) -> LoopOutcome:
    """The loop over one request's attempts in seed order: ``p_available`` the judge's, ``oracle`` the labels."""
    if len(p_available) < max_attempts:
        raise ValueError(f"max_attempts: {max_attempts} attempts need {max_attempts} images, the request has "
                         f"{len(p_available)}")
    for attempt in range(max_attempts):
        if p_available[attempt] >= threshold:
            return LoopOutcome(attempt + 1, attempt, oracle[attempt])
    best = int(np.argmax(np.asarray(p_available[:max_attempts], dtype=np.float64)))  # first of equal maxima
    return LoopOutcome(max_attempts, best, oracle[best])


def requests(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by product, each product's in seed order (its attempts)."""
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(record["product"], []).append(record)
    return {product: sorted(items, key=lambda r: r["seed"]) for product, items in grouped.items()}


def arms(records: list[dict], judges: Sequence[str], threshold: float, max_attempts: int) -> dict[str, list[LoopOutcome]]:
    """Per arm, one :class:`LoopOutcome` per request (product), products in the same order for every arm:

    ``one attempt``; ``<judge>, up to N`` for each judge (its p(Available), ``probabilities[judge][0]``); ``oracle, up to
    N`` (the oracle as the judge: p = 1 for Available, else 0; the loop's ceiling)."""
    grouped = requests(records)
    out: dict[str, list[LoopOutcome]] = {"one attempt": [], "oracle": []}
    out.update({judge: [] for judge in judges})
    for items in grouped.values():
        labels = [r["oracle"] for r in items]
        out["one attempt"].append(LoopOutcome(1, 0, labels[0]))
        out["oracle"].append(run_loop([float(label == AVAILABLE) for label in labels], labels, 0.5, max_attempts))
        for judge in judges:
            out[judge].append(run_loop([r["probabilities"][judge][0] for r in items], labels, threshold, max_attempts))
    return out
