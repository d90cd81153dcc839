"""Sample product cut-outs drawn in code (RGBA), for the demo, the README's commands and tests.

Real product photos are cut-outs with a transparent background; these have the same
properties (opaque body, soft semi-transparent edge pixels, fully transparent surroundings)
without shipping image files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SAMPLE_PRODUCTS = {
    "bottle": "a red bottle with a white cap",
    "mug": "a blue ceramic mug",
    "box": "a green gift box",
}


def draw_product(kind: str = "bottle", width: int = 120, height: int = 200, seed: int = 0) -> Image.Image:
    """An RGBA cut-out of ``kind`` (one of :data:`SAMPLE_PRODUCTS`), ``width`` x ``height`` pixels."""
    if kind not in SAMPLE_PRODUCTS:
        raise ValueError(f"kind: unknown sample product {kind!r}; choose one of {sorted(SAMPLE_PRODUCTS)}")
    rng = np.random.default_rng(seed)
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    w, h = width, height
    if kind == "bottle":
        draw.rounded_rectangle((w * 0.1, h * 0.3, w * 0.9, h * 0.97), radius=int(w * 0.17), fill=(200, 40, 40, 255))
        draw.rectangle((w * 0.37, h * 0.05, w * 0.63, h * 0.35), fill=(230, 230, 240, 255))
    elif kind == "mug":
        draw.ellipse((w * 0.62, h * 0.3, w * 0.98, h * 0.7), outline=(40, 80, 200, 255), width=max(2, w // 12))
        draw.rounded_rectangle((w * 0.05, h * 0.15, w * 0.75, h * 0.95), radius=int(w * 0.08), fill=(40, 80, 200, 255))
    else:
        draw.rectangle((w * 0.05, h * 0.25, w * 0.95, h * 0.95), fill=(40, 160, 70, 255))
        draw.rectangle((w * 0.44, h * 0.25, w * 0.56, h * 0.95), fill=(230, 200, 60, 255))
        draw.polygon([(w * 0.5, h * 0.25), (w * 0.2, h * 0.05), (w * 0.3, h * 0.25)], fill=(230, 200, 60, 255))
    pixels = np.array(image)
    body = pixels[..., 3] == 255
    texture = rng.integers(-15, 16, (int(body.sum()), 3))
    pixels[body, :3] = np.clip(pixels[body, :3].astype(int) + texture, 0, 255)
    # Anti-aliased edges: real cut-outs have a ring of partly transparent pixels.
    alpha = Image.fromarray(pixels[..., 3]).filter(ImageFilter.GaussianBlur(0.8))
    pixels[..., 3] = np.where(pixels[..., 3] == 0, np.asarray(alpha) // 2, pixels[..., 3])
    return Image.fromarray(pixels.astype(np.uint8), "RGBA")


def write_sample_products(out: str | os.PathLike) -> dict[str, Path]:
    """Write every sample product as ``out/<kind>.png``; returns kind -> path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, kind in enumerate(SAMPLE_PRODUCTS):
        paths[kind] = folder / f"{kind}.png"
        draw_product(kind, seed=i).save(paths[kind])
    return paths
