"""The screening benchmark's numbers from per-request and per-image records (numpy only).

Every interval is a 95 % bootstrap over PRODUCTS (requests of one product move together), and
comparisons of two arms are paired: the same resampled products in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def auc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties counting 1/2; None without both classes."""
    pos = np.asarray([s for s, p in zip(scores, positives) if p], dtype=np.float64)
    neg = np.asarray([s for s, p in zip(scores, positives) if not p], dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return None
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


def by_product(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["product"], []).append(record)
    return groups


def bootstrap(records: list[dict], statistic: Callable[[list[dict]], float | None], rounds: int,
              seed: int = 0) -> dict:
    """``statistic`` of ``records`` with its 95 % interval over ``rounds`` resamples of the products
    (statistics that are undefined on a resample, None, are left out of the interval)."""
    groups = list(by_product(records).values())
    value = statistic(records)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(rounds if groups else 0):
        sample = [record for i in rng.integers(0, len(groups), len(groups)) for record in groups[i]]
        drawn = statistic(sample)
        if drawn is not None and math.isfinite(drawn):
            draws.append(drawn)
    low, high = (np.percentile(draws, [2.5, 97.5]).tolist() if draws else (None, None))
    return {"value": value, "low": low, "high": high, "products": len(groups), "resamples": len(draws)}


def paired_bootstrap(a: list[dict], b: list[dict], statistic: Callable[[list[dict], list[dict]], float | None],
                     rounds: int, seed: int = 0) -> dict:
    """``statistic(a, b)`` of two arms measured on the same products, with its 95 % interval over
    resamples of those products (each resample takes the same products from both arms)."""
    groups_a, groups_b = by_product(a), by_product(b)
    products = sorted(set(groups_a) & set(groups_b))
    value = statistic(a, b)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(rounds if products else 0):
        chosen = [products[i] for i in rng.integers(0, len(products), len(products))]
        drawn = statistic([r for p in chosen for r in groups_a[p]], [r for p in chosen for r in groups_b[p]])
        if drawn is not None and math.isfinite(drawn):
            draws.append(drawn)
    low, high = (np.percentile(draws, [2.5, 97.5]).tolist() if draws else (None, None))
    return {"value": value, "low": low, "high": high, "products": len(products), "resamples": len(draws)}


def ratio(numerator: str, denominator: str) -> Callable[[list[dict]], float | None]:
    """sum(numerator) / sum(denominator) over records (e.g. Available images per CPU-second)."""
    def compute(records: list[dict]) -> float | None:
        total = sum(r[denominator] for r in records)
        return None if total <= 0 else sum(r[numerator] for r in records) / total
    return compute


def share(key: str) -> Callable[[list[dict]], float | None]:
    """Mean of a boolean field (e.g. oracle availability of the returned images)."""
    def compute(records: list[dict]) -> float | None:
        return float(np.mean([bool(r[key]) for r in records])) if records else None
    return compute


def speedup(numerator: str, denominator: str) -> Callable[[list[dict], list[dict]], float | None]:
    """(ratio of arm b) / (ratio of arm a): how many times more ``numerator`` per ``denominator`` b gives."""
    per = ratio(numerator, denominator)

    def compute(a: list[dict], b: list[dict]) -> float | None:
        base, other = per(a), per(b)
        return None if not base or other is None else other / base
    return compute


def difference(key: str) -> Callable[[list[dict], list[dict]], float | None]:
    """share(key) of arm b minus that of arm a."""
    mean = share(key)

    def compute(a: list[dict], b: list[dict]) -> float | None:
        return None if not a or not b else mean(b) - mean(a)
    return compute


def latency_percentiles(records: list[dict], key: str = "first_available_s") -> dict:
    """p50 and p99 of the time to the first Available image over requests; a request that returned
    none counts as never (infinite), so a percentile that falls on one is None ("not reached")."""
    values = np.asarray([math.inf if r[key] is None else r[key] for r in records], dtype=np.float64)
    out = {"requests": len(records), "reached": int(np.isfinite(values).sum())}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        value = float(np.quantile(values, q, method="inverted_cdf")) if len(values) else math.inf
        out[name] = value if math.isfinite(value) else None
    return out
