"""Shared fixtures: the tiny model zoo (built once per session) and hand-drawn product cut-outs."""

from __future__ import annotations

import pytest

from rfad.tiny.products import draw_product


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """The tiny zoo written to disk through the real save path; returns its folder."""
    from rfad.tiny.zoo import build_tiny_zoo

    root = tmp_path_factory.mktemp("zoo")
    build_tiny_zoo(root, seed=0)
    return root


@pytest.fixture
def product_png(tmp_path):
    path = tmp_path / "product.png"
    draw_product("bottle").save(path)
    return path
