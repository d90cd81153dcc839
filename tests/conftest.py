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


@pytest.fixture(scope="session")
def tiny_onnx(tiny_zoo, tmp_path_factory):
    """Every component of the tiny zoo exported to ONNX (with the parity check), once per session."""
    from rfad.export.onnx_export import export_onnx
    from rfad.models.model_set import ModelSet

    out = tmp_path_factory.mktemp("onnx")
    export_onnx(ModelSet.resolve(tiny_zoo), out, echo=lambda *_: None)
    return out
