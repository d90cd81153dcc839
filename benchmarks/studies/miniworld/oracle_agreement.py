"""The oracle against labels known by construction, on a few thousand samples per source; renders the docs.

    python -m benchmarks.studies.miniworld.oracle_agreement [--n-per-class 600] [--seed 0]

For every source of :data:`rfad.trainer.data.oracle_check.ORACLE_CHECK_SOURCES` (the miniature-world scenes,
the same scenes blurred and noised like a decoder would, the synthetic set), draws
``n_per_class`` samples of each class, labels them with the oracle and records the confusion
matrix, the agreement per class and per drawn variant, and the first disagreements with the
oracle's explanation. Writes benchmarks/results/oracle_agreement.json, then docs/miniworld.md's
generated sections (report.py). The test (tests/test_oracle.py) checks >= 95 % per class on
another seed.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import write_results
from benchmarks.studies.miniworld.report import render

from rfad.trainer.api import ORACLE_CHECK_SOURCES, measure_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for source in ORACLE_CHECK_SOURCES:
        start = time.perf_counter()
        agreement = measure_agreement(source, args.n_per_class, seed=args.seed)
        rows.append({**agreement.to_dict(), "seconds": round(time.perf_counter() - start, 1)})
        print(source, {name: round(share, 4) for name, share in agreement.per_class().items()}, flush=True)
    path = write_results("oracle_agreement", rows, {"n_per_class": args.n_per_class, "seed": args.seed})
    print(f"wrote {path}")
    render()


if __name__ == "__main__":
    main()
