"""A model set declares the canvas its generator was trained on (rfad-models.json "canvas"), and every
path that places a product honours it: `rfad generate`, the export manifest, the served pipeline's
repository and the judge endpoint's prepare step."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rfad.canvas import CanvasSpec, canvas_from_dict, canvas_to_dict, prepare_canvas
from rfad.models.folders import ModelFolderError
from rfad.models.model_set import MODEL_SET_FILE, ModelSet

DECLARED = CanvasSpec(width=96, height=96, product_scale=0.5, upscale=True, mask_dilation=3)


def test_a_declared_canvas_round_trips_and_bad_ones_name_the_key(tiny_zoo, tmp_path):
    assert canvas_from_dict(canvas_to_dict(DECLARED), "canvas") == DECLARED
    folder = tmp_path / "set"
    ModelSet.resolve(tiny_zoo).with_overrides(canvas=DECLARED).write(folder)
    assert ModelSet.resolve(folder).canvas == DECLARED
    assert ModelSet.resolve(tiny_zoo).canvas is None  # none declared: CanvasSpec's defaults apply
    data = json.loads((folder / MODEL_SET_FILE).read_text())
    for canvas, message in (({"width": 100}, r"canvas\.width: must be a multiple of 8"),
                            ({"product_scale": 2.0}, r"canvas\.product_scale: must be in \(0, 1\]"),
                            ({"dilation": 3}, r"canvas: unknown key\(s\) \['dilation'\]"),
                            ([128], "canvas: expected an object")):
        (folder / MODEL_SET_FILE).write_text(json.dumps({**data, "canvas": canvas}))
        with pytest.raises(ModelFolderError, match=message):
            ModelSet.resolve(folder)


def test_generate_places_the_product_as_the_set_declares(tiny_zoo, product_png, tmp_path):
    from rfad.app.cli import main as rfad_cli

    folder = tmp_path / "set"
    ModelSet.resolve(tiny_zoo).with_overrides(canvas=DECLARED).write(folder)
    args = ["generate", "--models", str(folder), "--product", str(product_png), "--prompt", "a mug", "--steps", "1"]
    result = CliRunner().invoke(rfad_cli, [*args, "--out", str(tmp_path / "a.png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "a.json").read_text())
    expected = prepare_canvas(product_png, DECLARED)
    assert {k: sidecar["canvas"][k] for k in canvas_to_dict(DECLARED)} == canvas_to_dict(DECLARED)
    assert sidecar["canvas"]["box"] == list(expected.box)
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (96, 96)
    result = CliRunner().invoke(rfad_cli, [*args, "--out", str(tmp_path / "b.png"), "--size", "128"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "b.json").read_text())
    assert (sidecar["canvas"]["width"], sidecar["canvas"]["product_scale"], sidecar["canvas"]["upscale"]) == (128, 0.5, True)


@pytest.fixture(scope="module")
def declared_onnx(tiny_onnx, tmp_path_factory):
    """The tiny export with a declared canvas in its manifest (as `rfad-export onnx` of such a set writes it)."""
    out = tmp_path_factory.mktemp("declared") / "onnx"
    shutil.copytree(tiny_onnx, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["canvas"] = canvas_to_dict(DECLARED)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_the_repository_serves_the_declared_canvas(declared_onnx, tmp_path):
    from rfad.components.manifest import ExportManifest
    from rfad.export.triton_repo import write_triton_repo
    from rfad.serving.judge_io import declared_spec

    repo = write_triton_repo(declared_onnx, tmp_path / "repo", backend="python")
    config = (repo / "rfad_pipeline" / "config.pbtxt").read_text()
    assert 'key: "canvas_size"' in config and 'string_value: "96"' in config
    assets = repo / "rfad_pipeline" / "1" / "assets"
    assert ExportManifest.read(assets / "components.json", "assets").canvas_spec(96) == DECLARED
    assert declared_spec(repo / "rfad_judge_prepare" / "1" / "assets") == DECLARED
    assert json.loads((repo / "deployment.json").read_text())["declared_canvas"] == canvas_to_dict(DECLARED)
    flagged = write_triton_repo(declared_onnx, tmp_path / "flagged", backend="python", canvas_size=128)
    assert 'string_value: "128"' in (flagged / "rfad_pipeline" / "config.pbtxt").read_text()


def test_the_judge_endpoint_places_the_product_as_declared(product_png, tiny_onnx):
    """I_o as the pipeline's own judge sees it (the canvas's init image at the judge's size) for an ad of
    the declared canvas's size, and not the default placement's."""
    from transformers import AutoTokenizer

    from rfad.pipeline.judge_view import resize_array
    from rfad.serving.judge_io import JudgeRequest, judge_tensors

    tokenizer = AutoTokenizer.from_pretrained(tiny_onnx / "caption_tokenizer")
    ad = Image.fromarray(np.full((96, 96, 3), 90, np.uint8))
    buffer = __import__("io").BytesIO()
    ad.save(buffer, format="PNG")
    request = JudgeRequest([buffer.getvalue()], product_png.read_bytes(), "a mug", 0.5)
    for spec in (DECLARED, CanvasSpec()):
        expected = prepare_canvas(product_png, spec.__class__(**{**canvas_to_dict(spec), "width": 96, "height": 96}))
        view = resize_array(expected.init_image.transpose(2, 0, 1).astype(np.float32) / 255.0, 32)
        got = judge_tensors(request, tokenizer, 32, spec)["product_image"][0]
        assert np.abs(got - view).max() < 1e-5
    declared = judge_tensors(request, tokenizer, 32, DECLARED)["product_image"]
    assert np.abs(declared - judge_tensors(request, tokenizer, 32)["product_image"]).max() > 0.1
