"""x0-previews for a noise-aware screening judge: what each candidate shows at the screening step,
labelled by the oracle's verdict on the same candidate's FINAL image.

A judge trained on finished images ranks early x0-previews less well than one that has seen
previews (TTSnap's finding; rfad's miniature world measures it in benchmarks/studies/screening/screening_bench.py).
This writes the data to fine-tune one: the miniature world's requests (the products, canvases,
prompts and seeds of RF-mini, :mod:`rfad.trainer.data.miniworld`), each generated in one attempt
of ``images_per_product`` candidates through the real loop (:func:`rfad.pipeline.generate.generate`,
torch runner) with early screening at ``screen_at`` and a screening threshold of 0: nothing is
replaced, every candidate's preview (its decoded x0-prediction with the product pasted back) is
judged and recorded, and every candidate runs on to its final image, which the oracle labels
(:func:`rfad.miniworld.oracle.label_ad`). With RF-mini's settings the final images are RF-mini's
own (same seeds, same loop, nothing replaced).

Each preview is one row of the standard manifest (:mod:`rfad.trainer.data.manifest`): the preview
as ``generated``, the final image's oracle label as ``label``, splits by product as RF-mini's, so
``rfad-train rfnet --init <judge> --data OUT`` fine-tunes a screening judge on it and
``rfad generate --screen-rfnet`` / the model set's ``screen_rfnet`` use the result.

Files written to ``out``: ``images/`` (previews), ``finals/`` (the final images, for inspection),
``products/``, ``manifest.jsonl``, ``labels.jsonl`` (per row: product, seed, step, the preview's
p(Available) by the judge that screened, the final image's oracle label, the rules that fired)
and ``summary.json`` (settings, counts per label and split, seconds).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rfad.contract import CLASS_NAMES, check_screening
from rfad.trainer.data.manifest import SPLITS, ManifestRow, write_manifest
from rfad.trainer.data.miniworld import SEED_SPAN, MiniworldSettings, product_requests, product_splits
from rfad.miniworld.oracle import label_ad


@dataclass(frozen=True)
class PreviewSettings:
    """RF-mini's request settings (:class:`MiniworldSettings`), the screening step's share ``screen_at``
    and ``world_products``: the size of the RF-mini whose products and splits the previews take
    (the products, prompts and splits of a stream depend on its size), or None for a stream of
    just the products the previews need."""

    world: MiniworldSettings = MiniworldSettings()
    screen_at: float = 0.25
    world_products: int | None = None

    def __post_init__(self) -> None:
        try:
            check_screening(self.screen_at, 0.0, self.world.steps)
        except ValueError as exc:
            raise ValueError(f"screen-at: {str(exc).split(': ', 1)[1]}") from None
        if self.world_products is not None and self.world_products < 1:
            raise ValueError(f"world-products: must be at least 1, got {self.world_products}")


def write_preview_dataset(out_dir: str | os.PathLike, n: int, runner, judge, settings: PreviewSettings = PreviewSettings(),
                          progress: bool = False) -> dict:
    """Generate ``n`` candidates (``ceil(n / images_per_product)`` products, in the stream's order; of
    ``settings.world_products``, those outside its test split) with ``runner`` (a
    :class:`rfad.pipeline.runner.ComponentRunner`: the generator's models) and record each one's
    preview at the screening step, judged by ``judge`` (the ``Judge`` that screens, e.g. a
    :class:`rfad.pipeline.judge.RunnerJudge`), labelled by the oracle on its final image.
    Returns the summary (also written to ``summary.json``)."""
    from rfad.pipeline.generate import generate
    from rfad.pipeline.settings import GenerationSettings

    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    world = settings.world
    start = time.perf_counter()
    per_product = world.images_per_product
    stream = settings.world_products or -(-n // per_product)
    requests = product_requests(stream, world.seed, world.available_share)
    splits = product_splits(stream, world.seed, world.val_fraction, world.test_fraction)
    # Of a given world, the test products are left out: they are what the screening bench and the
    # judge's test split read, and no screening judge may have seen them.
    products = [p for p in range(stream) if settings.world_products is None or splits[p] != "test"]
    if n > len(products) * per_product:
        raise ValueError(f"n: {n} previews need {-(-n // per_product)} products; the {stream}-product world has "
                         f"{len(products)} outside its test split")
    products = products[:-(-n // per_product)]
    out = Path(out_dir)
    for folder in ("images", "finals", "products"):
        (out / folder).mkdir(parents=True, exist_ok=True)

    rows, labels = [], []
    with tqdm(total=n, desc="x0-previews", unit="image", disable=not progress) as bar:
        for p in products:
            scene, count = requests[p], min(per_product, n - len(rows))
            product_path = f"products/preview-{p:05d}.png"
            scene.product.save(out / product_path, format="PNG")
            request = GenerationSettings(steps=world.steps, guidance_scale=world.guidance,
                                         seed=world.seed * SEED_SPAN + p * per_product, num_images=count,
                                         candidates=count, max_attempts=1, threshold=1.0,
                                         screen_at=settings.screen_at, screen_threshold=0.0)
            previews = []
            result = generate(runner, scene.canvas, scene.prompt, request, caption=scene.caption, judge=judge,
                              on_preview=previews.append)
            finals = {candidate.seed: candidate.image for candidate in result.candidates}
            product = np.asarray(scene.canvas.product_rgba)
            for j, preview in enumerate(previews):
                verdict = label_ad(finals[preview.seed], product, scene.canvas.product_alpha)
                sample_id = f"preview-{p:05d}-{j}"
                Image.fromarray(preview.image).save(out / "images" / f"{sample_id}.png", format="PNG")
                Image.fromarray(finals[preview.seed]).save(out / "finals" / f"{sample_id}.png", format="PNG")
                rows.append(ManifestRow(id=sample_id, generated=f"images/{sample_id}.png", product=product_path,
                                        prompt=scene.prompt, caption=scene.caption, label=verdict.label,
                                        split=splits[p]))
                labels.append({"id": sample_id, "product": p, "seed": preview.seed, "step": preview.step,
                               "p_available_preview": round(preview.p_available, 6), "label": verdict.label,
                               "fired": list(verdict.fired)})
                bar.update(1)
    write_manifest(rows, out / "manifest.jsonl")
    with open(out / "labels.jsonl", "w", encoding="utf-8") as file:
        file.writelines(json.dumps(entry) + "\n" for entry in labels)
    counts = {name: sum(row.label == name for row in rows) for name in CLASS_NAMES}
    summary = {
        "settings": {**asdict(world), "screen_at": settings.screen_at, "world_products": stream,
                     "screen_step": labels[0]["step"] if labels else None},
        "images": len(rows), "products": len(products), "labels": counts,
        "splits": {split: {"images": sum(row.split == split for row in rows),
                           "products": len({row.product for row in rows if row.split == split})} for split in SPLITS},
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
