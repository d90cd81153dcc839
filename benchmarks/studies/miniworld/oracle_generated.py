"""The oracle where it is used: agreement on generated-looking scenes whose truth is known; renders the docs.

    python -m benchmarks.studies.miniworld.oracle_generated --work DIR [--sets val] [--n-per-class 300]
        [--constructions vae,repainted] [--strength 0.3] [--models DIR]

RF-mini's labels are the oracle's verdicts on images the generator painted; its agreement with
drawn labels (``oracle_agreement``) says little about those. Here drawn scenes of known class go
through the generator's own machinery first (:mod:`rfad.trainer.data.oracle_generated`): the VAE
round trip, and a repaint at ``--strength`` of the DDIM schedule (layout kept, texture painted).

The protocol: two disjoint scene sets. ``val`` may be looked at while the oracle's rules change;
``report`` is measured once the rules are final, for the numbers docs/miniworld.md states (with
95 % Wilson intervals per class). Each (generator, construction, set) is one part, saved as
``DIR/<construction>-<set>-<generator>.json`` (the generator named by its VAE's latent factor and
weights' hash, :func:`benchmarks.studies.miniworld.report.generator_identity`) and skipped when
present (delete it to rerun; a rule change makes every saved part stale: the part records the
oracle's rule table, and the report refuses a part measured under other rules).
``benchmarks/results/oracle_generated.json`` gathers the parts, keeping the rows of other
generators and constructions that are already there (measured under the same rules).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import date
from pathlib import Path

from benchmarks.common import RESULTS, write_results
from benchmarks.studies.miniworld.report import generator_identity, render

from rfad.miniworld.oracle import RULES
from rfad.trainer.api import Construction, load_generator, measure_generated_agreement

SETS = ("val", "report")


def wilson(agreed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of the share ``agreed / n``."""
    if n == 0:
        return 0.0, 1.0
    p = agreed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rules_fingerprint() -> list[list[str]]:
    """The oracle's rule table as stated: a part measured under other rules is stale."""
    return [[rule.label, rule.measures, rule.fires_when] for rule in RULES]


def _key(row: dict) -> tuple:
    return row["construction"], row["set"], (row.get("generator") or {}).get("vae_sha256")


def merged_rows(new: list[dict], previous: list[dict]) -> list[dict]:
    """The new parts, and the previous results' rows of other (construction, set, generator) under the same rules."""
    keys = {_key(row) for row in new}
    kept = [row for row in previous if _key(row) not in keys and row["rules"] == rules_fingerprint()]
    return sorted(kept + new, key=lambda r: (_key(r)[2] or "", r["construction"], r["set"]))


def run_part(runner, construction: Construction, scene_set: str, n_per_class: int) -> dict:
    start = time.perf_counter()
    agreement = measure_generated_agreement(
        runner, construction, n_per_class, scene_set,
        progress=lambda done, total: print(f"  {construction.name}, {scene_set}: {done}/{total} classes", flush=True))
    row = agreement.to_dict()
    row["intervals"] = {name: wilson(int(agreement.confusion[i, i]), int(agreement.confusion[i].sum()))
                        for i, name in enumerate(row["classes"])}
    return {**row, "construction": construction.name, "set": scene_set, "rules": rules_fingerprint(),
            "seconds": round(time.perf_counter() - start, 1), "measured": date.today().isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="Folder of the parts' results.")
    parser.add_argument("--sets", default="val", help=f"Scene sets to measure, of {', '.join(SETS)}.")
    parser.add_argument("--constructions", default="vae,repainted")
    parser.add_argument("--strength", type=float, default=0.3, help="Repaint strength (share of the DDIM steps).")
    parser.add_argument("--n-per-class", type=int, default=300)
    parser.add_argument("--models", type=Path, help="Generator model set [default: the shipped one].")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sets = [s for s in args.sets.split(",") if s]
    if unknown := sorted(set(sets) - set(SETS)):
        parser.error(f"--sets: unknown {unknown}; expected any of {', '.join(SETS)}")
    constructions = [Construction(kind, args.strength if kind == "repainted" else 0.0)
                     for kind in args.constructions.split(",") if kind]
    runner, generator = None, generator_identity(args.models)
    for construction in constructions:
        for scene_set in sets:
            path = args.work / f"{construction.name.replace(' ', '-')}-{scene_set}-{generator['tag']}.json"
            if path.is_file() and json.loads(path.read_text())["rules"] == rules_fingerprint():
                print(f"{path} exists (same rules), skipped")
                continue
            if runner is None:
                runner, _ = load_generator(args.models)
            row = {**run_part(runner, construction, scene_set, args.n_per_class), "generator": generator}
            path.write_text(json.dumps(row, indent=2) + "\n")
            print(construction.name, scene_set, {k: round(v, 3) for k, v in row["per_class"].items()}, flush=True)
    rows = [json.loads(p.read_text()) for p in sorted(args.work.glob("*.json"))]
    rows = [row for row in rows if row["rules"] == rules_fingerprint()]
    previous = RESULTS / "oracle_generated.json"
    rows = merged_rows(rows, json.loads(previous.read_text())["rows"] if previous.is_file() else [])
    path = write_results("oracle_generated", rows, {"work": str(args.work), "strength": args.strength})
    print(f"wrote {path}")
    render()


if __name__ == "__main__":
    main()
