"""What the miniature world's generator paints: single-shot oracle verdicts on held-out products; renders the docs.

    python -m benchmarks.studies.miniworld.generated_scenes [--products 200] [--steps 20] [--guidance 7.5] [--models DIR]

Generates one image per held-out product (``rfad-data miniworld``'s machinery: the real loop,
torch runner, the miniature world's canvas, DDIM, no judge), labels each with the oracle and
records the share of every class, overall and by the class whose scene the request's prompt
came from, and the share of images showing what their prompt names (prompt fidelity). Writes benchmarks/results/miniworld_generated.json and docs/miniworld-generated.png
(generated scenes with their verdicts), then docs/miniworld.md's generated sections (report.py).
With ``--models`` naming another folder than the shipped generator's, it writes
``miniworld_generated_<tag>.json`` and ``miniworld_generated_<tag>.png`` beside the results
instead (tag: the VAE's factor and weights' hash, as the oracle-generated study's), and the docs,
which describe the shipped generator, stay as they are.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.common import RESULTS, write_results
from benchmarks.studies.miniworld.report import DOCS, SHORT, generator_identity, render

from rfad.contract import CLASS_NAMES
from rfad.miniworld import model_dir
from rfad.trainer.api import MiniworldSettings, fidelity_shares, write_miniworld_dataset

GRID_COLUMNS = 8


def verdict_grid(folder: Path, labels: list[dict], path: Path, columns: int = GRID_COLUMNS) -> None:
    """Up to ``columns`` images of each oracle label (one row per label that occurs), the verdict under each."""
    side, caption, gap = 128, 14, 2
    rows = [[entry for entry in labels if entry["label"] == name][:columns] for name in CLASS_NAMES]
    rows = [row for row in rows if row]
    sheet = Image.new("RGB", (columns * (side + gap) - gap, len(rows) * (side + caption + gap) - gap), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, entry in enumerate(row):
            x, y = c * (side + gap), r * (side + caption + gap)
            sheet.paste(Image.open(folder / "images" / f"{entry['id']}.png").convert("RGB"), (x, y))
            draw.text((x + 2, y + side + 1), SHORT[entry["label"]], fill="black")
    sheet.save(path, format="PNG", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=MiniworldSettings.guidance)
    parser.add_argument("--available-share", type=float, default=MiniworldSettings.available_share)
    parser.add_argument("--seed", type=int, default=1, help="Request seed (RF-mini's default is 0: other products).")
    parser.add_argument("--models", help="Generator model set [default: the shipped one].")
    args = parser.parse_args()
    settings = MiniworldSettings(seed=args.seed, steps=args.steps, guidance=args.guidance, images_per_product=1,
                                 available_share=args.available_share)
    identity = generator_identity(args.models and Path(args.models))
    shipped = args.models is None or Path(args.models).resolve() == model_dir().resolve()
    name = "miniworld_generated" if shipped else f"miniworld_generated_{identity['tag']}"
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_miniworld_dataset(tmp, args.products, settings, models=args.models, progress=True)
        labels = [json.loads(line) for line in (Path(tmp) / "labels.jsonl").read_text().splitlines()]
        verdict_grid(Path(tmp), labels, DOCS / "miniworld-generated.png" if shipped else RESULTS / f"{name}.png")
    by_prompt = {source: {name: sum(e["prompt_from"] == source and e["label"] == name for e in labels)
                          for name in CLASS_NAMES} for source in CLASS_NAMES}
    fired = {name: round(float(np.mean([name in e["fired"] for e in labels])), 4) for name in CLASS_NAMES[1:]}
    fidelity = fidelity_shares([e["fidelity"] for e in labels])
    row = {"rates": summary["rates"], "labels": summary["labels"], "by_prompt": by_prompt, "fired": fired,
           "prompt_fidelity": {name: value["share"] for name, value in fidelity.items()},
           "images": summary["images"], "seconds": summary["seconds"],
           "generator_record_sha256": summary["generator_record_sha256"]}
    path = write_results(name, [row], {**summary["settings"], "generator": summary["generator"],
                                       "generator_vae": identity})
    print(json.dumps(summary["rates"]), f"in {summary['seconds']} s; wrote {path}")
    if shipped:
        render()


if __name__ == "__main__":
    main()
