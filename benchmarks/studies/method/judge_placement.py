"""Where RFNet's product image I_o is placed: the shipped judge at its training scale and at the served one.

    python -m benchmarks.studies.method.judge_placement --work DIR [--retrain]

``DIR`` is a ``benchmarks/studies/method/method_bench.py`` work folder (its RF-mini with cached maps, and its
drawn-scene judge for ``--retrain``). The miniature world's judge (``rfad/miniworld/judge/rfnet``)
was trained with I_o placed at ``rfad-train rfnet``'s default product_scale, 0.75, while the world's
canvas, which the demo's ``rfad_judge_prepare`` serves, places products at 0.5. This scores the
shipped judge on RF-mini's test split with I_o at both scales (``rfad-train eval-rfnet
--product-scale``), and with ``--retrain`` a judge trained the same way at the world's 0.5
(``rfad-train rfnet --product-scale 0.5``, same data, schedule, seed and drawn-scene start),
scored at both. Writes benchmarks/results/judge_placement.json; docs/method.md renders it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import ROOT, markdown_table, write_results

SHIPPED = ROOT / "rfad" / "miniworld" / "judge" / "rfnet"


def score(model: Path, data: Path, product_scale: float) -> dict:
    """The judge's test-split metrics with I_o placed at ``product_scale``."""
    from rfad.trainer.api import evaluate_rfnet

    metrics = evaluate_rfnet(str(model), str(data), "test", product_scale=product_scale, echo=lambda *_: None)
    return {"accuracy": metrics["accuracy"], "available_ap": metrics["available"]["ap"],
            "available_f1": metrics["available"]["f1"], "n": metrics["n"],
            "per_class_f1": {name: m["f1"] for name, m in metrics["per_class"].items()}}


def main() -> None:
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.trainer.api import TRAIN_LOG

    from benchmarks.studies.method.judges import train_variant

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a benchmarks/studies/method/method_bench.py work folder")
    parser.add_argument("--retrain", action="store_true", help="also train a judge at the world's product_scale")
    args = parser.parse_args()
    data = args.work / "rf-mini-maps" / "manifest.jsonl"
    if not data.is_file():
        parser.error(f"--work {args.work}: no RF-mini with maps ({data}); run method_bench.py --parts data first")
    trained = json.loads((SHIPPED / TRAIN_LOG).read_text())["config"]
    shipped_scale = float(trained.get("product_scale", 0.75))
    served = MINIWORLD_CANVAS.product_scale
    judges = [("shipped", SHIPPED, shipped_scale)]
    if args.retrain:
        out = args.work / f"rfnet-full-ps{served:g}"
        train_variant(data, out, (), int(trained["epochs"]), int(trained["image_size"]), int(trained["batch_size"]),
                      int(trained["seed"]), args.work / "rfnet-scenes", product_scale=served)
        judges.append((f"retrained at {served:g}", out, served))
    rows = []
    for name, model, trained_at in judges:
        for placed_at in sorted({shipped_scale, served}, reverse=True):
            rows.append({"judge": name, "trained_at": trained_at, "scored_at": placed_at,
                         "served": placed_at == served, **score(model, data, placed_at)})
            print(f"{name}: I_o at {placed_at:g}: accuracy {rows[-1]['accuracy']:.3f}", flush=True)
    path = write_results("judge_placement", rows, {"work": str(args.work), "served_product_scale": served,
                                                   "shipped_trained_at": shipped_scale})
    print(table(rows))
    print(f"written to {path}")


def table(rows: list[dict]) -> str:
    """The rows as docs/method.md shows them."""
    shown = [{**r, "at": f"{r['scored_at']:g}" + (" (served)" if r["served"] else ""),
              "acc": f"{100 * r['accuracy']:.1f} %", "ap": f"{r['available_ap']:.3f}", "f1": f"{r['available_f1']:.3f}",
              "trained": f"{r['trained_at']:g}"} for r in rows]
    return markdown_table(shown, [("judge", "judge"), ("trained", "I_o trained at"), ("at", "I_o scored at"),
                                  ("acc", "test accuracy"), ("ap", "Available AP"), ("f1", "Available F1")])


if __name__ == "__main__":
    main()
