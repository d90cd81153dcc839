"""RF-mini: ad images painted by the miniature world's generator, labelled by the oracle (RF1M's role).

Each product is a request as an ad system would send it: a product cut-out, placed by the
miniature world's canvas, and a prompt. Both come from :func:`draw_scene` under the seed
``[seed, REQUEST_STREAM, product]`` (a stream the generator's training scenes never use, so
every product is held out); the prompt is that of a scene of a class drawn from the request
mix, and only the prompt is kept, never the drawn background. The generator then paints
``images_per_product`` candidates in one attempt through the real loop
(:func:`rfad.pipeline.generate.generate`, torch runner, DDIM, no judge), the product is pasted
back, and the oracle labels every image. Splits are by product: a product's images never cross
train/val/test.

Files written to ``out``: ``images/``, ``products/`` (one cut-out per product),
``manifest.jsonl`` (the standard manifest), ``labels.jsonl`` (per image: the product, the seed,
the rules that fired and the oracle's measurements) and ``summary.json`` (settings, the
generator's training record hash, counts per class and split, seconds).
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

from rfad.contract import CLASS_NAMES
from rfad.miniworld.oracle import OracleVerdict, label_ad
from rfad.trainer.data.manifest import SPLITS, ManifestRow, write_manifest
from rfad.trainer.data.scenes import REQUEST_STREAM, Scene, class_mix, draw_scene, mixed_labels

# Seeds of the generated images: product p's candidate j uses seed * SEED_SPAN + p * K + j.
SEED_SPAN = 10_000_000


@dataclass(frozen=True)
class MiniworldSettings:
    """How RF-mini is generated; ``guidance`` and ``steps`` are the loop's (DDIM, eta 0)."""

    seed: int = 0
    steps: int = 20
    guidance: float = 7.5
    images_per_product: int = 4
    available_share: float = 0.4   # the request prompts' class mix, as the generator's training scenes
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.images_per_product < 1:
            raise ValueError(f"images-per-product: must be at least 1, got {self.images_per_product}")
        if self.steps < 1:
            raise ValueError(f"steps: must be at least 1, got {self.steps}")
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"val-fraction ({self.val_fraction}) and test-fraction ({self.test_fraction}) must be "
                             ">= 0 and sum to less than 1")
        class_mix(self.available_share)


def product_requests(n_products: int, seed: int, available_share: float) -> list[Scene]:
    """The requests of products ``0 .. n_products - 1``: a drawn scene whose product, canvas, prompt and caption are used."""
    labels = mixed_labels(n_products, class_mix(available_share), np.random.default_rng([seed, REQUEST_STREAM]))
    return [draw_scene(label, np.random.default_rng([seed, REQUEST_STREAM, p])) for p, label in enumerate(labels)]


def product_splits(n_products: int, seed: int, val_fraction: float, test_fraction: float) -> list[str]:
    """The split of every product: a seeded permutation, the first ``test_fraction`` test, the next val."""
    order = np.random.default_rng([seed, REQUEST_STREAM, 1]).permutation(n_products)
    n_test, n_val = round(test_fraction * n_products), round(val_fraction * n_products)
    splits = ["train"] * n_products
    for rank, p in enumerate(order):
        splits[p] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def generate_for_product(runner, scene: Scene, count: int, first_seed: int, steps: int, guidance: float,
                         ) -> list[tuple[int, np.ndarray, OracleVerdict]]:
    """``count`` images of ``scene``'s product and prompt in one attempt: [(seed, uint8 [H, W, 3], verdict)]."""
    from rfad.pipeline.generate import generate
    from rfad.pipeline.settings import GenerationSettings

    settings = GenerationSettings(steps=steps, guidance_scale=guidance, seed=first_seed, num_images=count,
                                  candidates=count, max_attempts=1)
    result = generate(runner, scene.canvas, scene.prompt, settings, caption=scene.caption)
    product = np.asarray(scene.canvas.product_rgba)
    return [(c.seed, c.image, label_ad(c.image, product, scene.canvas.product_alpha)) for c in result.candidates]


def load_generator(models: str | os.PathLike | None, device: str = "cpu"):
    """The torch runner over ``models`` (default: the shipped generator, :func:`rfad.miniworld.model_dir`)."""
    from rfad.miniworld import model_dir
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.torch_runner import TorchRunner

    folder = Path(models) if models is not None else model_dir()
    return TorchRunner(load_diffusion_models(ModelSet.resolve(folder), device=device), device=device), folder


def write_miniworld_dataset(out_dir: str | os.PathLike, n: int, settings: MiniworldSettings = MiniworldSettings(),
                            models: str | os.PathLike | None = None, device: str = "cpu",
                            progress: bool = False) -> dict:
    """Generate and label ``n`` images (``ceil(n / images_per_product)`` products); returns the summary."""
    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    start = time.perf_counter()
    runner, folder = load_generator(models, device)
    per_product = settings.images_per_product
    n_products = -(-n // per_product)
    requests = product_requests(n_products, settings.seed, settings.available_share)
    splits = product_splits(n_products, settings.seed, settings.val_fraction, settings.test_fraction)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "products").mkdir(parents=True, exist_ok=True)

    rows, labels = [], []
    with tqdm(total=n, desc="generating RF-mini", unit="image", disable=not progress) as bar:
        for p, scene in enumerate(requests):
            count = min(per_product, n - p * per_product)
            product_path = f"products/mini-{p:05d}.png"
            scene.product.save(out / product_path, format="PNG")
            first_seed = settings.seed * SEED_SPAN + p * per_product
            for j, (seed, image, verdict) in enumerate(generate_for_product(
                    runner, scene, count, first_seed, settings.steps, settings.guidance)):
                sample_id = f"mini-{p:05d}-{j}"
                image_path = f"images/{sample_id}.png"
                Image.fromarray(image).save(out / image_path, format="PNG")
                rows.append(ManifestRow(id=sample_id, generated=image_path, product=product_path, prompt=scene.prompt,
                                        caption=scene.caption, label=verdict.label, split=splits[p]))
                labels.append({"id": sample_id, "product": p, "seed": seed, "label": verdict.label,
                               "fired": list(verdict.fired), "prompt_from": scene.label,
                               "measurements": verdict.measurements})
                bar.update(1)
    write_manifest(rows, out / "manifest.jsonl")
    with open(out / "labels.jsonl", "w", encoding="utf-8") as file:
        file.writelines(json.dumps(entry) + "\n" for entry in labels)
    summary = _summary(rows, settings, folder, n_products, time.perf_counter() - start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _summary(rows: list[ManifestRow], settings: MiniworldSettings, folder: Path, n_products: int,
             seconds: float) -> dict:
    from rfad.miniworld import RECORD_FILE, file_sha256

    record = folder / RECORD_FILE
    counts = {name: sum(row.label == name for row in rows) for name in CLASS_NAMES}
    return {
        "settings": asdict(settings),
        "generator": str(folder),
        "generator_record_sha256": file_sha256(record) if record.is_file() else None,
        "images": len(rows),
        "products": n_products,
        "labels": counts,
        "rates": {name: round(count / len(rows), 4) for name, count in counts.items()},
        "splits": {split: {"images": sum(row.split == split for row in rows),
                           "products": len({row.product for row in rows if row.split == split})} for split in SPLITS},
        "seconds": round(seconds, 1),
    }
