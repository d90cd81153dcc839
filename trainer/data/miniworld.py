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
from rfad.trainer.data.fidelity import read_fidelity
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
                         ) -> list[tuple[int, np.ndarray, OracleVerdict, np.ndarray]]:
    """``count`` images of ``scene``'s product and prompt in one attempt:
    [(seed, uint8 [H, W, 3], verdict, final latents float32 [4, h, w])].

    The loop's own pieces in its order (:func:`rfad.pipeline.denoise.denoise`, then the paste-back
    of :func:`rfad.pipeline.generate.generate`), so the images are the loop's candidates; the final
    latents are kept so that a later decoder can decode them again (:func:`redecode_miniworld`).
    """
    import torch

    from rfad.canvas import paste_back
    from rfad.pipeline.denoise import denoise_steps, start_denoising, to_uint8
    from rfad.pipeline.request import prepare_request
    from rfad.pipeline.settings import GenerationSettings

    settings = GenerationSettings(steps=steps, guidance_scale=guidance, seed=first_seed, num_images=count,
                                  candidates=count, max_attempts=1)
    seeds = [first_seed + j for j in range(count)]
    batch = start_denoising(runner, prepare_request(runner, scene.canvas, scene.prompt), seeds, settings)
    latents = denoise_steps(runner, batch, settings)
    with torch.no_grad():
        images = paste_back(to_uint8(runner.vae_decoder(latents)), scene.canvas)
    product = np.asarray(scene.canvas.product_rgba)
    return [(seed, image, label_ad(image, product, scene.canvas.product_alpha), latent.float().cpu().numpy())
            for seed, image, latent in zip(seeds, images, latents)]


def load_generator(models: str | os.PathLike | None, device: str = "cpu"):
    """The torch runner over ``models`` (default: the shipped generator, :func:`rfad.miniworld.model_dir`)."""
    from rfad.miniworld import model_dir
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.torch_runner import TorchRunner

    folder = Path(models) if models is not None else model_dir()
    return TorchRunner(load_diffusion_models(ModelSet.resolve(folder), device=device), device=device), folder


SETTINGS_FILE = "settings.json"
RECORDS = "records"
LATENTS = "latents"  # each image's final latents (float32 .npy), for decoding again with another decoder


def product_id(p: int) -> str:
    return f"mini-{p:05d}"


def shard_products(n_products: int, shard: tuple[int, int]) -> list[int]:
    """Products of shard ``(i, count)``: every ``count``-th product from ``i`` (shards interleave, so each
    gets the same class mix and splits)."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard: expected I/N with 0 <= I < N, got {index}/{count}")
    return list(range(index, n_products, count))


def _check_settings(out: Path, n: int, settings: MiniworldSettings, folder: Path) -> None:
    """Record what the dataset is (first call) or refuse to extend it with other settings (resume, shards)."""
    wanted = {"n": n, "settings": asdict(settings), "generator": str(folder)}
    path = out / SETTINGS_FILE
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            differs = sorted(k for k in wanted if found.get(k) != wanted[k])
            raise ValueError(f"{out} holds RF-mini made with other {', '.join(differs)} ({path}): resume or add "
                             "shards with the same --n, --seed, --models and generation flags, or use another --out")
        return
    _write_json_atomically(path, wanted)


def _write_json_atomically(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def write_miniworld_dataset(out_dir: str | os.PathLike, n: int, settings: MiniworldSettings = MiniworldSettings(),
                            models: str | os.PathLike | None = None, device: str = "cpu",
                            progress: bool = False, shard: tuple[int, int] = (0, 1)) -> dict:
    """Generate and label ``n`` images (``ceil(n / images_per_product)`` products); returns the summary.

    Resumable and shardable: each product's images are followed by its record
    (``records/mini-PPPPP.json``, written atomically), a product with a record is skipped, and
    ``shard=(i, N)`` generates every N-th product from i, so N processes (or machines sharing the
    folder) split the work. Whichever call finds every record present writes manifest.jsonl,
    labels.jsonl and summary.json; until then the summary says how many products are done
    (``"complete": False``).
    """
    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    per_product = settings.images_per_product
    n_products = -(-n // per_product)
    mine = shard_products(n_products, shard)
    out = Path(out_dir)
    for sub in ("images", "products", RECORDS, LATENTS):
        (out / sub).mkdir(parents=True, exist_ok=True)
    folder = Path(models) if models is not None else None
    runner = None
    todo = [p for p in mine if not (out / RECORDS / f"{product_id(p)}.json").is_file()]
    if todo:
        runner, folder = load_generator(models, device)
    else:
        from rfad.miniworld import model_dir

        folder = folder or model_dir()
    _check_settings(out, n, settings, folder)
    requests = product_requests(n_products, settings.seed, settings.available_share)
    splits = product_splits(n_products, settings.seed, settings.val_fraction, settings.test_fraction)
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc="generating RF-mini", unit="product",
              disable=not progress) as bar:
        for p in todo:
            _write_product(out, p, requests[p], splits[p], min(per_product, n - p * per_product), settings, runner)
            bar.update(1)
    return finalize_miniworld(out, n, settings, folder)


def _write_product(out: Path, p: int, scene: Scene, split: str, count: int, settings: MiniworldSettings,
                   runner) -> None:
    """Generate, save and label product ``p``'s images; its record, written last, marks it done."""
    start = time.perf_counter()
    product_path = f"products/{product_id(p)}.png"
    scene.product.save(out / product_path, format="PNG")
    first_seed = settings.seed * SEED_SPAN + p * settings.images_per_product
    rows, labels = [], []
    for j, (seed, image, verdict, latents) in enumerate(generate_for_product(
            runner, scene, count, first_seed, settings.steps, settings.guidance)):
        sample_id = f"{product_id(p)}-{j}"
        image_path = f"images/{sample_id}.png"
        Image.fromarray(image).save(out / image_path, format="PNG")
        np.save(out / LATENTS / f"{sample_id}.npy", latents)
        rows.append(ManifestRow(id=sample_id, generated=image_path, product=product_path, prompt=scene.prompt,
                                caption=scene.caption, label=verdict.label, split=split).to_dict())
        labels.append({"id": sample_id, "product": p, "seed": seed, "label": verdict.label,
                       "fired": list(verdict.fired), "prompt_from": scene.label,
                       "measurements": verdict.measurements,
                       "fidelity": read_fidelity(image, np.asarray(scene.canvas.product_rgba),
                                                 scene.canvas.product_alpha, scene.prompt)})
    _write_json_atomically(out / RECORDS / f"{product_id(p)}.json",
                           {"rows": rows, "labels": labels, "seconds": round(time.perf_counter() - start, 2)})


def finalize_miniworld(out: Path, n: int, settings: MiniworldSettings, folder: Path) -> dict:
    """Write manifest.jsonl, labels.jsonl and summary.json once every product's record exists; otherwise
    return ``{"complete": False, "products_done", "products"}``."""
    n_products = -(-n // settings.images_per_product)
    paths = [out / RECORDS / f"{product_id(p)}.json" for p in range(n_products)]
    done = sum(path.is_file() for path in paths)
    if done < n_products:
        return {"complete": False, "products_done": done, "products": n_products}
    records = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    rows = [ManifestRow(**row) for record in records for row in record["rows"]]
    write_manifest(rows, out / "manifest.jsonl")
    partial = out / "labels.jsonl.partial"
    with open(partial, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(entry) + "\n" for record in records for entry in record["labels"])
    partial.replace(out / "labels.jsonl")
    seconds = sum(record["seconds"] for record in records)
    summary = {"complete": True, **_summary(rows, settings, folder, n_products, seconds)}
    _write_json_atomically(out / "summary.json", summary)
    return summary


def relabel_miniworld(out_dir: str | os.PathLike, progress: bool = False, decoder=None) -> dict:
    """Label every image of the RF-mini folder ``out_dir`` again with the oracle as it is now (its rules
    changed since generation): each product's record, then manifest.jsonl, labels.jsonl and
    summary.json. ``decoder``: a runner whose VAE decodes every image's kept final latents again
    first (the generator's decoder was fine-tuned: its UNet and ControlNet, hence the latents, are
    the same); without it the images are not touched. Returns the new summary (with
    ``relabelled``: how many labels changed)."""
    import torch

    from rfad.canvas import paste_back, prepare_canvas
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.pipeline.denoise import to_uint8

    out = Path(out_dir)
    wanted = out / SETTINGS_FILE
    if not wanted.is_file():
        raise FileNotFoundError(f"{out}: no {SETTINGS_FILE}; not an RF-mini folder written by rfad-data miniworld")
    written = json.loads(wanted.read_text(encoding="utf-8"))
    settings = MiniworldSettings(**written["settings"])
    n_products = -(-written["n"] // settings.images_per_product)
    changed = 0
    for p in tqdm(range(n_products), desc="relabelling RF-mini", unit="product", disable=not progress):
        path = out / RECORDS / f"{product_id(p)}.json"
        if not path.is_file():
            continue  # not generated yet: it will be labelled by the current oracle when it is
        record = json.loads(path.read_text(encoding="utf-8"))
        canvas = prepare_canvas(out / record["rows"][0]["product"], MINIWORLD_CANVAS)
        product = np.asarray(canvas.product_rgba)
        if decoder is not None:
            # The product's images decoded as one batch, as generate_for_product decoded them: a
            # convolution's rounding depends on the batch, so the same decoder gives the same bytes.
            latents = np.stack([np.load(out / LATENTS / f"{row['id']}.npy", allow_pickle=False)
                                for row in record["rows"]])
            with torch.no_grad():
                decoded = decoder.vae_decoder(torch.from_numpy(latents).to(decoder.device, decoder.dtype))
            if tuple(decoded.shape[-2:]) != canvas.mask.shape:  # checked on the first product
                raise ValueError(f"--redecode: its VAE decodes the kept latents {list(latents.shape[1:])} to "
                                 f"{decoded.shape[-1]} px, the images are {canvas.mask.shape[1]} px: the decoder must have "
                                 "the generator's latent factor")
            redecoded = paste_back(to_uint8(decoded), canvas)
        for i, (row, entry) in enumerate(zip(record["rows"], record["labels"])):
            if decoder is not None:
                image = redecoded[i]
                Image.fromarray(image).save(out / row["generated"], format="PNG")
            else:
                image = np.asarray(Image.open(out / row["generated"]).convert("RGB"))
            verdict = label_ad(image, product, canvas.product_alpha)
            changed += verdict.label != row["label"]
            row["label"] = entry["label"] = verdict.label
            entry["fired"], entry["measurements"] = list(verdict.fired), verdict.measurements
            entry["fidelity"] = read_fidelity(image, product, canvas.product_alpha, row["prompt"])
        _write_json_atomically(path, record)
    summary = finalize_miniworld(out, written["n"], settings, Path(written["generator"]))
    return {**summary, "relabelled": changed}


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
