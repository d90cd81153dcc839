"""`rfad demo`, the README's main job, end to end: tiny zoo -> ONNX -> repository -> Triton -> gRPC."""

from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image


def test_demo_writes_images_and_a_report(tmp_path):
    from rfad.cli import main as rfad_cli

    out = tmp_path / "out"
    result = CliRunner().invoke(rfad_cli, ["demo", "--out", str(out), "--size", "128", "--steps", "2",
                                           "--max-attempts", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    assert f"rfad-serve --repo {out / 'repo'}" in result.output  # where the README's tour picks up
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] and len(report["requests"]) == 3
    for request in report["requests"]:
        assert 1 <= request["attempts"] <= 2 and len(request["probabilities"][0]) == 5
        with Image.open(request["images"][0]) as image:
            assert image.size == (128, 128)
    assert "| product | attempts |" in (out / "report.md").read_text()
    assert json.loads((out / "onnx" / "parity.json").read_text())["rows"]
