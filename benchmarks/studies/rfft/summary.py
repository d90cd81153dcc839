"""RFFT's numbers from per-image records: each with its 95 % interval by product, the tuned against the base paired.

A setting is evaluated once per training seed on the same products and seeds as the base
(:mod:`benchmarks.studies.rfft.runs`). Its value of any measure is the mean over its training
seeds; its interval resamples PRODUCTS (:mod:`benchmarks.studies.method.stats`), every seed and
the base recomputed on the same resample, so a ratio or difference to the base is paired.

Measures, per ControlNet: oracle availability and each class's share over every image; the judge's
availability (p >= threshold), its AUC against the oracle and its gap to the oracle; prompt fidelity
(the share of images showing all their prompt names); diversity across seeds (a product's images)
and across products (first images), as ratios to the base's; and Recurrent Generation read off
each product's images in seed order (:func:`benchmarks.studies.method.loop_arms.run_loop`): one
attempt, up to N with the judge, up to N with the oracle as judge (the ceiling), attempts used,
and attempts until the oracle's first Available image (a request without one counts N + 1).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from benchmarks.studies.method.loop_arms import run_loop
from benchmarks.studies.method.metrics import auc
from benchmarks.studies.method.stats import bootstrap_interval, paired_difference
from rfad.contract import CLASS_NAMES

AVAILABLE = CLASS_NAMES[0]
JUDGE = "RFNet"
# The targets, which are also the choice rule on validation (docs/method.md, RFFT's protocol).
DIVERSITY_FLOOR = 0.85    # tuned / base diversity, across seeds and across products
FIDELITY_DROP = 0.05      # prompt fidelity at most this far below the base's
AUC_FLOOR = 0.8           # the judge's AUC on the tuned outputs / on the base's
GAIN_TARGET = 0.15        # oracle availability over the base's

Statistic = Callable[[np.ndarray], "float | None"]


class Group:
    """One ControlNet setting's evaluations (one per training seed) on one split, as arrays [E, P]
    over ``products`` (the study's product order): E evaluations, P products."""

    def __init__(self, evaluations: Sequence[dict], products: Sequence[str], threshold: float, max_attempts: int):
        shape = (len(evaluations), len(products))
        column = {product: k for k, product in enumerate(products)}
        self.images, self.judged = np.zeros(shape), np.zeros(shape)
        self.classes = {name: np.zeros(shape) for name in CLASS_NAMES}
        self.faithful, self.read = np.zeros(shape), np.zeros(shape)
        self.seed_distance, self.cross_distance = np.full(shape, np.nan), np.full(shape, np.nan)
        loop_fields = ("one_attempt", "judge_loop", "judge_attempts", "judge_exhausted", "oracle_loop", "to_oracle")
        self.loop = {name: np.full(shape, np.nan) for name in loop_fields}
        self.scores: list[list[list[tuple[float, bool]]]] = [[[] for _ in products] for _ in evaluations]
        self.max_attempts = max_attempts
        for e, evaluation in enumerate(evaluations):
            by_product: dict[str, list[dict]] = {}
            for record in evaluation["records"]:
                by_product.setdefault(record["product"], []).append(record)
            for product, records in by_product.items():
                k = column[product]
                records.sort(key=lambda r: r["seed"])
                p = [r["probabilities"][JUDGE][0] for r in records]
                labels = [r["oracle"] for r in records]
                self.images[e, k] = len(records)
                self.judged[e, k] = sum(value >= threshold for value in p)
                for label in labels:
                    self.classes[label][e, k] += 1
                readings = [r["fidelity"] for r in records if r["fidelity"] is not None]
                self.read[e, k], self.faithful[e, k] = len(readings), sum(r["faithful"] for r in readings)
                self.scores[e][k] = list(zip(p, [label == AVAILABLE for label in labels]))
                if len(records) >= max_attempts:
                    judge = run_loop(p, labels, threshold, max_attempts)
                    oracle = run_loop([float(label == AVAILABLE) for label in labels], labels, 0.5, max_attempts)
                    first = next((a + 1 for a, label in enumerate(labels[:max_attempts]) if label == AVAILABLE),
                                 max_attempts + 1)
                    for name, value in (("one_attempt", labels[0] == AVAILABLE), ("judge_loop", judge.available),
                                        ("judge_attempts", judge.attempts),
                                        ("judge_exhausted", judge.attempts == max_attempts and p[judge.returned] < threshold),
                                        ("oracle_loop", oracle.available), ("to_oracle", first)):
                        self.loop[name][e, k] = float(value)
            for entry in evaluation["products"]:
                k = column[entry["product"]]
                for name in ("seed_distance", "cross_distance"):
                    if entry[name] is not None:
                        getattr(self, name)[e, k] = entry[name]

    # --- statistics of a resample of product columns --------------------------------------------------
    @staticmethod
    def _share(numerator: np.ndarray, denominator: np.ndarray) -> Statistic:
        def statistic(items: np.ndarray) -> float | None:
            totals = denominator[:, items].sum(axis=1)
            if (totals == 0).any():
                return None
            return float(np.mean(numerator[:, items].sum(axis=1) / totals))
        return statistic

    @staticmethod
    def _mean(values: np.ndarray) -> Statistic:
        def statistic(items: np.ndarray) -> float | None:
            picked = values[:, items]
            if np.isnan(picked).all(axis=1).any():
                return None
            return float(np.mean(np.nanmean(picked, axis=1)))
        return statistic

    def statistics(self) -> dict[str, Statistic]:
        """Every measure as a statistic of resampled product columns (seed mean)."""
        out = {"oracle_available": self._share(self.classes[AVAILABLE], self.images),
               "judge_available": self._share(self.judged, self.images),
               "prompt_fidelity": self._share(self.faithful, self.read),
               "seed_distance": self._mean(self.seed_distance),
               "cross_distance": self._mean(self.cross_distance),
               "judge_auc": self._auc}
        out.update({f"share {name}": self._share(self.classes[name], self.images) for name in CLASS_NAMES[1:]})
        available, judged = out["oracle_available"], out["judge_available"]
        out["judge_minus_oracle"] = lambda items: _minus(judged(items), available(items))
        if not np.isnan(self.loop["one_attempt"]).all():
            out.update({f"loop {name}": self._mean(values) for name, values in self.loop.items()})
        return out

    def _auc(self, items: np.ndarray) -> float | None:
        values = []
        for per_product in self.scores:
            pairs = [pair for k in items for pair in per_product[k]]
            values.append(auc([p for p, _ in pairs], [positive for _, positive in pairs]))
        return None if any(v is None for v in values) else float(np.mean(values))


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


RATIOS = ("seed_distance", "cross_distance", "judge_auc")    # reported as tuned / base
DIFFERENCES = ("oracle_available", "prompt_fidelity", "judge_available")  # reported as tuned - base


def compare(group: Group, other: Group, products: Sequence[str], draws: int = 2000) -> dict:
    """``group`` against ``other`` on the same products and seeds: the ratios (:data:`RATIOS`) with their
    intervals and the differences (:data:`DIFFERENCES`) with intervals and p values, paired by product."""
    every = np.arange(len(products))
    mine, theirs = group.statistics(), other.statistics()
    out = {}
    for name in RATIOS:
        def ratio(items, name=name):
            return _ratio(mine[name](items), theirs[name](items))
        out[name] = {"value": ratio(every), "interval": bootstrap_interval(ratio, products, draws)}
    for name in DIFFERENCES:
        out[name] = paired_difference(mine[name], theirs[name], products, draws)
    return out


def summarize(group: Group, base: Group | None, products: Sequence[str], draws: int = 2000) -> dict:
    """Every measure of ``group`` with its interval by product; with ``base``, ``<measure> vs base``:
    :func:`compare` against it."""
    every = np.arange(len(products))
    out = {name: {"value": statistic(every), "interval": bootstrap_interval(statistic, products, draws)}
           for name, statistic in group.statistics().items()}
    if base is not None:
        out.update({f"{name} vs base": value for name, value in compare(group, base, products, draws).items()})
    return out


def meets_guards(summary: dict) -> dict[str, bool]:
    """The choice rule's guards on one setting's validation summary (against the base's)."""
    return {"seed diversity": (summary["seed_distance vs base"]["value"] or 0) >= DIVERSITY_FLOOR,
            "cross-product diversity": (summary["cross_distance vs base"]["value"] or 0) >= DIVERSITY_FLOOR,
            "prompt fidelity": summary["prompt_fidelity vs base"]["difference"] >= -FIDELITY_DROP}


def choose(summaries: dict[str, dict], regs: Sequence[str]) -> dict[str, dict]:
    """Per regulariser, the setting chosen on validation: the highest oracle availability among the
    settings that keep diversity (both kinds, >= :data:`DIVERSITY_FLOOR` x the base's) and prompt fidelity
    (within :data:`FIDELITY_DROP`); when none keeps them, the highest availability, flagged."""
    from benchmarks.studies.rfft.runs import Setting

    chosen = {}
    for reg in regs:
        names = [name for name in summaries if Setting.parse(name).reg == reg]
        if not names:
            continue
        kept = [name for name in names if all(meets_guards(summaries[name]).values())]
        pool = kept or names
        best = max(pool, key=lambda name: (summaries[name]["oracle_available"]["value"], name))
        chosen[reg] = {"setting": best, "kept_diversity_and_fidelity": bool(kept), "candidates": len(names),
                       "eligible": len(kept)}
    return chosen
