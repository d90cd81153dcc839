"""The numbers of the method table, from per-image samples (torch-free: numpy only)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from rfad.contract import CLASS_NAMES


def auc(scores: list[float], positives: list[bool]) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2
    (the Mann-Whitney U statistic over n_pos * n_neg). None without both classes."""
    pos = np.asarray([s for s, p in zip(scores, positives) if p], dtype=np.float64)
    neg = np.asarray([s for s, p in zip(scores, positives) if not p], dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def seed_distance(images: list[np.ndarray], background: np.ndarray) -> float:
    """Mean over pairs of mean |a - b| (pixels in [0, 1]) over ``background`` (bool [H, W]):
    images uint8 [H, W, 3] of one product from different seeds. The diversity indicator: a model
    that paints the same background whatever the seed scores near 0."""
    pixels = [image[background].astype(np.float64) / 255.0 for image in images]
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(pixels, 2)]))


def label_shares(labels: list[str]) -> dict[str, float]:
    counts = Counter(labels)
    return {name: counts.get(name, 0) / max(1, len(labels)) for name in CLASS_NAMES}


def single_shot_summary(samples: list[dict], threshold: float, backgrounds: dict | None = None) -> dict:
    """Oracle and RFNet availability of single-shot samples, RFNet's AUC against the oracle (final
    image and early x0-predictions), and the diversity indicator when the images are present."""
    oracle = [s["oracle"] == "Available" for s in samples]
    p = [s["p_available"] for s in samples]
    summary = {
        "images": len(samples),
        "oracle_available": float(np.mean(oracle)),
        "oracle_labels": label_shares([s["oracle"] for s in samples]),
        "rfnet_available": float(np.mean([value >= threshold for value in p])),
        "rfnet_p_available_mean": float(np.mean(p)),
        "rfnet_auc_final": auc(p, oracle),
        "rfnet_auc_early": {fraction: auc([s["p_available_early"][fraction] for s in samples], oracle)
                            for fraction in (samples[0]["p_available_early"] if samples else {})},
        "threshold": threshold,
    }
    if samples and "image" in samples[0] and backgrounds is not None:
        by_product: dict[str, list[np.ndarray]] = {}
        for s in samples:
            by_product.setdefault(s["product"], []).append(s["image"])
        distances = [seed_distance(images, backgrounds[product]) for product, images in by_product.items()
                     if len(images) > 1]
        summary["seed_distance"] = float(np.mean(distances)) if distances else None
    return summary


def recurrent_summary(samples: list[dict], max_attempts: int) -> dict:
    """Recurrent Generation: oracle availability of the returned image vs the first attempt's, attempts used."""
    attempts = [s["attempts"] for s in samples]
    return {
        "requests": len(samples),
        "max_attempts": max_attempts,
        "oracle_available_first_attempt": float(np.mean([s["oracle_first"] == "Available" for s in samples])),
        "oracle_available_returned": float(np.mean([s["oracle_returned"] == "Available" for s in samples])),
        "judged_available_returned": float(np.mean([s["judged_available"] for s in samples])),
        "attempts_mean": float(np.mean(attempts)),
        "attempts_histogram": {str(a): attempts.count(a) for a in range(1, max_attempts + 1)},
        "oracle_labels_returned": label_shares([s["oracle_returned"] for s in samples]),
    }
