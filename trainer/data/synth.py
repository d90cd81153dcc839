"""A small synthetic dataset in the manifest format, whose five labels can be learned from pixels.

Each sample is a product cut-out (RGBA PNG: an ellipse-like jar, a rounded box or a bottle in
one colour with a highlight, on a transparent background) and a "generated ad image" (RGB PNG,
``size`` x ``size``): a wall with a vertical gradient above a table whose edge is a drawn
ground line, with the product composited on it. How each class is drawn:

| label               | product size       | product placement              | background colour         | extra |
|---------------------|--------------------|--------------------------------|---------------------------|-------|
| Available           | normal (35-50 %)   | standing on the ground line    | far from the product's    | none  |
| Space Mismatch      | normal             | floating >= 18 % above it      | far                       | none  |
| Size Mismatch       | 12-25 % of normal  | standing on the ground line    | far                       | none  |
| Indistinctiveness   | normal             | standing on the ground line    | within a few % of product | none  |
| Shape Hallucination | normal             | standing on the ground line    | far                       | a bulge, a horn or a stand in the product's colour, drawn only in the ad image |

Sizes are fractions of the image height. Labels are balanced (``n // 5`` each, the first
``n % 5`` classes one more), shuffled and split (stratified by label) deterministically from
``seed``: the same arguments give byte-identical files. Depth and saliency stay null: the
prepare step computes them like for any other dataset.
"""

from __future__ import annotations

import colorsys
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from rfad.trainer.data.manifest import CLASS_NAMES, ManifestRow, write_manifest

# Named base colours (RGB); the caption names the one the product was drawn from.
COLOURS = {
    "red": (200, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (230, 205, 40),
    "green": (50, 160, 70),
    "blue": (40, 80, 200),
    "purple": (130, 60, 170),
    "pink": (235, 120, 170),
    "brown": (130, 80, 40),
    "teal": (30, 150, 150),
    "black": (35, 35, 40),
}
SHAPES = {
    # shape -> (width / height range, product nouns, sizes for the caption)
    "jar": ((0.65, 0.95), ("ceramic mug", "glass jar", "candle", "cookie tin"),
            ("350ml", "500ml", "200g", "1kg")),
    "box": ((0.6, 1.15), ("gift box", "bluetooth speaker", "tea box", "cosmetics case"),
            ("small", "large", "10 pcs", "set of 3")),
    "bottle": ((0.32, 0.48), ("water bottle", "shampoo", "olive oil", "perfume"),
               ("500ml", "750ml", "1L", "50ml")),
}
SURFACES = ("a wooden table", "a marble counter", "a kitchen shelf", "a white desk", "a concrete floor")
SCENES = ("soft studio light", "morning sunlight", "minimalist background", "cozy living room", "outdoor picnic")
STYLES = ("product photography", "high detail", "commercial ad", "8k photo")

NORMAL_HEIGHT = (0.35, 0.50)  # product height / image height
GROUND = (0.66, 0.80)  # ground line row / image height
FLOAT_GAP = (0.18, 0.25)  # Space Mismatch: gap under the product / image height
TINY_SCALE = (0.12, 0.25)  # Size Mismatch: fraction of the normal height
FAR_DISTANCE = 140.0  # minimum RGB distance between product and background colours
NEAR_JITTER = 16  # Indistinctiveness: per-channel offset of the background colour


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    size: int = 128,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    progress: bool = False,
) -> Path:
    """Write ``n`` samples to ``out_dir/{images,products}/`` and ``out_dir/manifest.jsonl``.

    Returns the manifest path. ``size`` is the side of the ad image and the height of the
    product cut-out, in pixels (at least 64).
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")

    def draw(label: str, rng: np.random.Generator) -> DrawnSample:
        product, ad, prompt, caption, _ = draw_placed_sample(label, rng, size)
        return DrawnSample(product, ad, prompt, caption)

    return write_drawn_dataset(out_dir, n, draw, seed=seed, prefix="synth", val_fraction=val_fraction,
                               test_fraction=test_fraction, progress=progress)


@dataclass(frozen=True, eq=False)
class DrawnSample:
    """One drawn sample: the product cut-out, the ad image, its texts and how it was drawn."""

    product: Image.Image            # RGBA cut-out, saved as the manifest's ``product``
    ad: Image.Image                 # RGB ad image, saved as the manifest's ``generated``
    prompt: str
    caption: str
    params: dict | None = None      # JSON-ready drawing parameters, written to ``scenes.jsonl`` when given
    label: str | None = None        # the manifest's label when it is not the class drawn (e.g. the oracle's)


def write_drawn_dataset(
    out_dir: str | os.PathLike,
    n: int,
    draw: Callable[[str, np.random.Generator], DrawnSample],
    *,
    seed: int,
    prefix: str,
    val_fraction: float,
    test_fraction: float,
    progress: bool,
) -> Path:
    """Write ``n`` samples drawn by ``draw(label, rng)``, balanced over the classes; return the manifest path.

    Files: ``images/<prefix>-NNNNN.png``, ``products/<prefix>-NNNNN.png``, ``manifest.jsonl`` and,
    when samples carry ``params``, ``scenes.jsonl`` (one ``{"id", "label", "drawn", "params"}`` per line:
    ``drawn`` is the class drawn, ``label`` the manifest's, which a sample may set otherwise).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 "
            "and sum to less than 1"
        )
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "products").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    labels = [CLASS_NAMES[i % len(CLASS_NAMES)] for i in range(n)]
    rng.shuffle(labels)
    splits = _stratified_splits(labels, val_fraction, test_fraction)

    rows, scenes = [], []
    for index in tqdm(range(n), desc=f"drawing {prefix}", unit="sample", disable=not progress):
        sample_id = f"{prefix}-{index:05d}"
        # One generator per sample: a sample does not depend on how many came before it.
        sample = draw(labels[index], np.random.default_rng([seed, index]))
        label = sample.label or labels[index]
        generated_path = f"images/{sample_id}.png"
        product_path = f"products/{sample_id}.png"
        sample.ad.save(out_dir / generated_path, format="PNG")
        sample.product.save(out_dir / product_path, format="PNG")
        rows.append(
            ManifestRow(
                id=sample_id,
                generated=generated_path,
                product=product_path,
                prompt=sample.prompt,
                caption=sample.caption,
                label=label,
                split=splits[index],
            )
        )
        if sample.params is not None:
            scenes.append({"id": sample_id, "label": label, "drawn": labels[index], "params": sample.params})
    if scenes:
        with open(out_dir / "scenes.jsonl", "w", encoding="utf-8") as file:
            file.writelines(json.dumps(scene) + "\n" for scene in scenes)
    return write_manifest(rows, out_dir / "manifest.jsonl")


def _stratified_splits(labels: list[str], val_fraction: float, test_fraction: float) -> list[str]:
    """Per label, the first ``round(test_fraction * count)`` samples are test, the next val."""
    splits = ["train"] * len(labels)
    for name in CLASS_NAMES:
        members = [i for i, label in enumerate(labels) if label == name]
        n_test = round(test_fraction * len(members))
        n_val = round(val_fraction * len(members))
        for i in members[:n_test]:
            splits[i] = "test"
        for i in members[n_test : n_test + n_val]:
            splits[i] = "val"
    return splits


@dataclass(frozen=True)
class ProductLook:
    """A drawn product's appearance and title: what :func:`draw_product` and the caption need."""

    colour_name: str
    colour: tuple[int, int, int]
    shape: str
    aspect: float  # width / height
    noun: str
    amount: str

    @property
    def caption(self) -> str:
        return f"{self.colour_name} {self.noun} {self.amount}"


def sample_product(rng: np.random.Generator) -> ProductLook:
    """A random product: a named colour (jittered), a shape, its aspect and a title."""
    colour_name = str(rng.choice(list(COLOURS)))
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour_name])
    shape = str(rng.choice(list(SHAPES)))
    (aspect_low, aspect_high), nouns, amounts = SHAPES[shape]
    aspect = float(rng.uniform(aspect_low, aspect_high))
    noun, amount = str(rng.choice(nouns)), str(rng.choice(amounts))
    return ProductLook(colour_name, colour, shape, aspect, noun, amount)


def draw_sample(label: str, rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image, str, str]:
    """Draw one sample of class ``label``: (product RGBA, ad image RGB, prompt, caption)."""
    return draw_placed_sample(label, rng, size)[:4]


def draw_placed_sample(
    label: str, rng: np.random.Generator, size: int,
) -> tuple[Image.Image, Image.Image, str, str, np.ndarray]:
    """:func:`draw_sample` plus the placement: the product's alpha on the ad image, uint8 [size, size]."""
    if label not in CLASS_NAMES:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(CLASS_NAMES)}")
    look = sample_product(rng)
    colour, caption = look.colour, look.caption
    prompt = f"a {look.noun} on {rng.choice(SURFACES)}, {rng.choice(SCENES)}, {rng.choice(STYLES)}"

    product = draw_product(look.shape, colour, look.aspect, height=size)
    # Like the pipeline's canvas preparation, place the product by its alpha bounding box.
    cutout = product.crop(product.getchannel("A").getbbox())

    ground = int(round(rng.uniform(*GROUND) * size))
    height = rng.uniform(*NORMAL_HEIGHT) * size
    bottom = ground
    if label == "Space Mismatch":
        gap = rng.uniform(*FLOAT_GAP) * size
        height = min(height, ground - gap - 0.04 * size)  # keep the floating product in frame
        bottom = int(round(ground - gap))
    elif label == "Size Mismatch":
        height *= rng.uniform(*TINY_SCALE)
    height = max(4, int(round(height)))
    width = max(3, int(round(height * cutout.width / cutout.height)))
    centre = int(round(size / 2 + rng.uniform(-0.2, 0.2) * size))
    left = int(np.clip(centre - width // 2, 1, size - width - 1))

    if label == "Indistinctiveness":
        wall = tuple(int(np.clip(c + rng.integers(-NEAR_JITTER, NEAR_JITTER + 1), 0, 255)) for c in colour)
        table = tuple(int(np.clip(c * 0.9, 0, 255)) for c in wall)
    else:
        wall, table = _far_background(colour, rng)
    ad = _background(size, wall, table, ground)

    if label == "Shape Hallucination":
        # Drawn before the product is pasted: the real pipeline pastes the product back, so a
        # hallucination lives only OUTSIDE the product's own pixels.
        bottom = _draw_hallucination(ad, rng, colour, left, width, height, ground)

    scaled = cutout.resize((width, height), Image.LANCZOS)
    ad.paste(scaled, (left, bottom - height), scaled)
    placement = Image.new("L", ad.size, 0)
    placement.paste(scaled.getchannel("A"), (left, bottom - height))
    return product, ad, prompt, caption, np.asarray(placement)


def draw_product(shape: str, colour: tuple[int, int, int], aspect: float, height: int) -> Image.Image:
    """A product cut-out: ``shape`` in ``colour`` with a lighter highlight, transparent around it."""
    margin = max(2, height // 32)
    width = max(8, int(round(height * aspect)))
    image = Image.new("RGBA", (width + 2 * margin, height + 2 * margin), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    fill = colour + (255,)
    x0, y0, x1, y1 = margin, margin, margin + width - 1, margin + height - 1
    middle = x0 + width // 2
    if shape == "jar":
        draw.rounded_rectangle((x0, y0, x1, y1), radius=width // 3, fill=fill)
        lid = (x0 + width // 6, y0, x1 - width // 6, y0 + height // 10)
        draw.rectangle(lid, fill=shade(colour, 0.7) + (255,))
    elif shape == "box":
        draw.rounded_rectangle((x0, y0, x1, y1), radius=max(2, width // 12), fill=fill)
        band_top = y0 + height // 3
        draw.rectangle((x0, band_top, x1, band_top + max(2, height // 14)), fill=shade(colour, 0.75) + (255,))
    elif shape == "bottle":
        neck = width // 3
        shoulder = y0 + height // 3
        draw.rectangle((middle - neck // 2, y0, middle + neck // 2, shoulder), fill=fill)
        draw.ellipse((x0, shoulder - width // 2, x1, shoulder + width // 2), fill=fill)
        draw.rounded_rectangle((x0, shoulder, x1, y1), radius=max(2, width // 6), fill=fill)
        cap = (middle - neck // 2, y0, middle + neck // 2, y0 + height // 14)
        draw.rectangle(cap, fill=shade(colour, 0.6) + (255,))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    stripe_left = x0 + width // 6
    highlight = (stripe_left, y0 + height // 4, stripe_left + max(1, width // 10), y1 - height // 6)
    draw.rectangle(highlight, fill=tint(colour, 0.3) + (255,))
    return image


def _draw_hallucination(ad: Image.Image, rng, colour, left: int, width: int, height: int, ground: int) -> int:
    """Draw an extra part attached to where the product will stand; return the product's bottom row."""
    draw = ImageDraw.Draw(ad)
    kind = rng.choice(("bulge", "horn", "stand"))
    top = ground - height
    if kind == "bulge":  # a blob growing out of one side
        radius = max(3, int(round(max(width, height) * rng.uniform(0.22, 0.32))))
        cy = int(round(top + height * rng.uniform(0.35, 0.7)))
        cx = left - radius // 2 if rng.random() < 0.5 else left + width + radius // 2
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        return ground
    if kind == "horn":  # a spike on top of the product
        half = max(2, int(round(width * rng.uniform(0.15, 0.3))))
        cx = left + width // 2 + int(round(rng.uniform(-0.2, 0.2) * width))
        tip = max(1, int(round(top - height * rng.uniform(0.3, 0.5))))
        draw.polygon([(cx - half, top + 2), (cx + half, top + 2), (cx, tip)], fill=colour)
        return ground
    # a stand/base in the product's colour, the product standing on it
    stand = max(3, int(round(height * rng.uniform(0.12, 0.2))))
    spread = int(round(width * rng.uniform(0.25, 0.45)))
    draw.rectangle((left - spread, ground - stand, left + width + spread, ground), fill=shade(colour, 0.9))
    return ground - stand


def _far_background(colour, rng) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A wall colour and a table colour, both at least FAR_DISTANCE from ``colour``."""
    target = np.array(colour, dtype=float)
    for _ in range(1000):
        hue, sat, val = rng.uniform(0, 1), rng.uniform(0.05, 0.6), rng.uniform(0.35, 1.0)
        wall = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        table = shade(wall, float(rng.uniform(0.6, 0.85)))
        if min(np.linalg.norm(np.array(wall) - target), np.linalg.norm(np.array(table) - target)) >= FAR_DISTANCE:
            return wall, table
    # Grey wall and table at the far end of the value range always qualify; reaching here
    # means the random search was unlucky, not that no background exists.
    grey = 235 if target.mean() < 128 else 20
    return (grey,) * 3, (grey,) * 3


def _background(size: int, wall, table, ground: int) -> Image.Image:
    """Wall (lighter towards the top) above a table (darker towards the front), a ground line between."""
    rows = np.arange(size, dtype=np.float32)[:, None]
    wall_ramp = 1.12 - 0.12 * np.clip(rows / max(ground, 1), 0, 1)
    table_ramp = 1.0 - 0.12 * np.clip((rows - ground) / max(size - ground, 1), 0, 1)
    pixels = np.where(rows < ground, np.array(wall, np.float32) * wall_ramp, np.array(table, np.float32) * table_ramp)
    pixels = np.broadcast_to(pixels[:, None, :], (size, size, 3))
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    line = max(1, size // 96)
    ImageDraw.Draw(image).rectangle((0, ground - line, size - 1, ground), fill=shade(table, 0.6))
    return image


def shade(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(c * factor), 0, 255)) for c in colour)


def tint(colour, amount: float) -> tuple[int, int, int]:
    return tuple(int(round(c + (255 - c) * amount)) for c in colour)
