"""The numbers of the method table, from per-image samples (numpy, and the trainer's diversity and fidelity measures)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from rfad.contract import CLASS_NAMES
from rfad.trainer.api import cross_product_distance, fidelity_shares, seed_distance


def auc(scores: list[float], positives: list[bool]) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2
    (the Mann-Whitney U statistic over n_pos * n_neg, from mid-ranks). None without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct value, ties averaged
    rank_sum = mid_ranks[inverse][positives].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def label_shares(labels: list[str]) -> dict[str, float]:
    counts = Counter(labels)
    return {name: counts.get(name, 0) / max(1, len(labels)) for name in CLASS_NAMES}


def single_shot_summary(samples: list[dict], threshold: float, backgrounds: dict | None = None) -> dict:
    """Oracle and RFNet availability of single-shot samples, RFNet's AUC against the oracle (final
    image and early x0-predictions), the diversity indicators (across seeds and across products) when
    the images are present, and prompt fidelity when every sample carries its reading."""
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
        # Each product's first image: the same seed index for every product.
        summary["cross_product_distance"] = cross_product_distance(
            [images[0] for images in by_product.values()], [backgrounds[product] for product in by_product])
    if samples and all(s.get("fidelity") is not None for s in samples):
        summary["prompt_fidelity"] = fidelity_shares([s["fidelity"] for s in samples])
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
