"""Shared fixtures: the tiny model zoo (built once per session) and hand-drawn product cut-outs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """The tiny zoo written to disk through the real save path; returns its folder."""
    from rfad.tiny.zoo import build_tiny_zoo

    root = tmp_path_factory.mktemp("zoo")
    build_tiny_zoo(root, seed=0)
    return root


def draw_product(width: int = 120, height: int = 200, seed: int = 0) -> Image.Image:
    """A bottle-shaped cut-out: opaque body with texture, soft-edged shoulders, transparent surroundings."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((10, 60, width - 10, height - 5), radius=20, fill=(200, 40, 40, 255))
    draw.rectangle((width // 2 - 15, 10, width // 2 + 15, 70), fill=(230, 230, 240, 255))
    pixels = np.array(image)
    body = pixels[..., 3] == 255
    pixels[body, :3] = np.clip(pixels[body, :3].astype(int) + rng.integers(-20, 20, (body.sum(), 3)), 0, 255)
    # A few semi-transparent pixels on the edge, as real cut-outs have.
    pixels[60:64, 10:14, 3] = 128
    return Image.fromarray(pixels.astype(np.uint8), "RGBA")


@pytest.fixture
def product_png(tmp_path):
    path = tmp_path / "product.png"
    draw_product().save(path)
    return path
