"""The method's tables from per-image records: every number with its 95 % interval by product.

A judge variant is trained over several seeds; its score is the mean over the seeds, and its
interval resamples products (:mod:`benchmarks.studies.method.stats`) with every seed scored on the
same resample, so the interval covers which products were drawn, and the seeds' spread is shown
beside it. Differences between variants, and between loop arms, are paired on the same images.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from benchmarks.studies.method.loop_arms import arms
from benchmarks.studies.method.stats import bootstrap_interval, paired_difference, share
from rfad.contract import CLASS_NAMES
from rfad.trainer.api import average_precision

AVAILABLE = CLASS_NAMES[0]


def _arrays(records: list[dict], judges: Sequence[str]):
    """(products, oracle is Available bool [N], oracle class index [N], probabilities [J, N, 5])."""
    products = [r["product"] for r in records]
    positives = np.asarray([r["oracle"] == AVAILABLE for r in records])
    labels = np.asarray([CLASS_NAMES.index(r["oracle"]) for r in records])
    probabilities = np.asarray([[r["probabilities"][judge] for r in records] for judge in judges], dtype=np.float64)
    return products, positives, labels, probabilities


def mean_ap(records: list[dict], judges: Sequence[str]):
    """The statistic "mean over ``judges`` (a variant's seeds) of Available AP on the items"."""
    _, positives, _, probabilities = _arrays(records, judges)

    def statistic(items: np.ndarray) -> float | None:
        values = [average_precision(probabilities[j, items, 0].tolist(), positives[items].tolist())
                  for j in range(len(judges))]
        return None if any(v is None for v in values) else float(np.mean(values))
    return statistic


def mean_accuracy(records: list[dict], judges: Sequence[str]):
    _, _, labels, probabilities = _arrays(records, judges)
    correct = probabilities.argmax(-1) == labels[None, :]
    return lambda items: float(correct[:, items].mean())


def judge_row(records: list[dict], name: str, judges: Sequence[str], reference: Sequence[str] | None = None) -> dict:
    """One row of the judge table: AP and accuracy (seed means, intervals by product, per-seed APs) and,
    given the ``reference`` variant's judges, the paired AP difference against it."""
    products = [r["product"] for r in records]
    every = np.arange(len(records))
    ap, accuracy = mean_ap(records, judges), mean_accuracy(records, judges)
    per_seed = [mean_ap(records, [judge])(every) for judge in judges]
    row = {"judge": name, "seeds": len(judges), "ap": ap(every), "ap_interval": bootstrap_interval(ap, products),
           "ap_per_seed": per_seed, "accuracy": accuracy(every),
           "accuracy_interval": bootstrap_interval(accuracy, products)}
    if reference is not None and list(reference) != list(judges):
        row["ap_vs_reference"] = paired_difference(ap, mean_ap(records, reference), products)
    return row


def base_rate(records: list[dict]) -> dict:
    """AP of a judge that guesses: the share of Available, with its interval."""
    products = [r["product"] for r in records]
    positives = [r["oracle"] == AVAILABLE for r in records]
    return {"share": float(np.mean(positives)), "interval": bootstrap_interval(share(positives), products)}


def loop_table(records: list[dict], judge_seeds: Sequence[str], threshold: float, max_attempts: int) -> dict:
    """Recurrent Generation's arms on the same requests: oracle availability of the returned image (with
    the judge arm averaged over ``judge_seeds``), mean attempts, share that used every attempt; paired
    differences: judge loop - one attempt, oracle loop - judge loop."""
    outcomes = arms(records, judge_seeds, threshold, max_attempts)
    products = list(dict.fromkeys(r["product"] for r in records))  # one request per product, arms' order

    def availability(names: Sequence[str]):
        table = np.asarray([[o.available for o in outcomes[n]] for n in names], dtype=np.float64)
        return lambda items: float(table[:, items].mean())

    rows = []
    for arm, names in (("one attempt", ["one attempt"]), (f"RFNet, up to {max_attempts}", list(judge_seeds)),
                       (f"oracle as the judge, up to {max_attempts}", ["oracle"])):
        every = np.arange(len(products))
        attempts = [o.attempts for n in names for o in outcomes[n]]
        rows.append({"arm": arm, "requests": len(products), "judges": len(names),
                     "available": availability(names)(every),
                     "available_interval": bootstrap_interval(availability(names), products),
                     "mean_attempts": float(np.mean(attempts)),
                     "exhausted": float(np.mean([a == max_attempts for a in attempts])) if arm != "one attempt" else 0.0})
    judge, one, oracle = availability(list(judge_seeds)), availability(["one attempt"]), availability(["oracle"])
    return {"rows": rows, "threshold": threshold, "max_attempts": max_attempts,
            "judge_minus_one": paired_difference(judge, one, products),
            "oracle_minus_judge": paired_difference(oracle, judge, products)}
