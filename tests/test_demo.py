"""`rfad demo`, the README's main job, end to end: models -> ONNX -> repository -> Triton -> gRPC -> report."""

from __future__ import annotations

import json
import re

import numpy as np
from click.testing import CliRunner
from PIL import Image

from rfad.contract import CLASS_NAMES


def test_tiny_demo_writes_images_and_a_report_with_early_screening(tmp_path):
    """With early screening at a threshold of 1.0 every candidate a slot may replace is replaced:
    two per attempt at step 2 of 4; the report shows them in draw order beside the finished ones."""
    from rfad.app.cli import main as rfad_cli

    out = tmp_path / "out"
    result = CliRunner().invoke(rfad_cli, ["demo", "--tiny", "--out", str(out), "--size", "128", "--steps", "4",
                                           "--max-attempts", "2", "--screen-at", "0.5", "--screen-threshold", "1.0"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output and re.search(r"screened out [24]\b", result.output)
    assert f"rfad-serve --repo {out / 'repo'}" in result.output  # where the README's tour picks up
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] and not report["world"] and len(report["requests"]) == 3
    assert report["screen_at"] == 0.5 and report["screen_threshold"] == 1.0
    for i, request in enumerate(report["requests"]):
        assert 1 <= request["attempts"] <= 2 and len(request["probabilities"]) == 5
        assert len(request["attempt_images"]) == request["attempts"] and request["oracle"] is None
        first = i * 100  # the demo's seed of product i
        assert [s["seed"] for s in request["screened"]] == [first + 3 * a + k for a in range(request["attempts"])
                                                           for k in (0, 1)]
        assert [(s["step"], s["attempt"]) for s in request["screened"]] == [
            (2, a + 1) for a in range(request["attempts"]) for _ in (0, 1)]
        assert [a["seed"] for a in request["attempt_images"]] == [first + 3 * a + 2 for a in range(request["attempts"])]
        assert all(a["screening"] == "not screened" for a in request["attempt_images"])
        with Image.open(request["attempt_images"][0]["image"]) as image:
            assert image.size == (128, 128)
    markdown = (out / "report.md").read_text()
    assert "| image |" in markdown and "| screening |" in markdown and "attempt 1 (screened)" in markdown
    assert "screened out at step 2 with p(Available)" in markdown and "not screened (its slot's refills were spent)" in markdown
    assert json.loads((out / "onnx" / "parity.json").read_text())["rows"]
    assert (out / "onnx" / "controlnet_unet").is_dir() and not (out / "onnx" / "unet").exists()  # what it serves
    refused = CliRunner().invoke(rfad_cli, ["demo", "--tiny", "--out", str(tmp_path / "no"), "--steps", "4",
                                            "--screen-at", "0.5"])
    assert refused.exit_code == 2 and "--screen-threshold: required with screen_at" in refused.output
    assert not (tmp_path / "no").exists()


def test_the_default_demo_serves_the_miniature_world(tmp_path, capfd):
    """Drawn products through the served loop: every attempt's image saved with RFNet's verdict and the
    oracle's label, and the image the loop returned is the one its attempt made alone."""
    from rfad.app.cli import main as rfad_cli

    out = tmp_path / "out"
    result = CliRunner().invoke(rfad_cli, ["demo", "--out", str(out), "--steps", "4", "--max-attempts", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "miniature world" in result.output and "oracle:" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["world"] and not report["random_weights"] and report["size"] == 128
    assert len(report["requests"]) == 4
    for request in report["requests"]:
        attempts = request["attempt_images"]
        assert len(attempts) == request["attempts"] and 1 <= request["attempts"] <= 2
        assert all(a["oracle"]["label"] in CLASS_NAMES and a["seed"] == request["attempt_images"][0]["seed"] + i
                   for i, a in enumerate(attempts))
        # An attempt judged Available ends the loop; the loop's verdicts are the attempts' own.
        assert [a["available"] for a in attempts[:-1]] == [False] * (len(attempts) - 1)
        returned = attempts[request["returned_attempt"] - 1]
        assert request["oracle"] == returned["oracle"] and request["available"] == returned["available"]
        assert abs(request["probabilities"]["Available"] - returned["probabilities"]["Available"]) < 1e-5
        with Image.open(returned["image"]) as image:
            assert image.size == (128, 128) and np.asarray(image).std() > 5  # a painted scene, not a flat canvas
    markdown = (out / "report.md").read_text()
    assert "| oracle (truth) |" in markdown and "![attempt 1]" in markdown
    # Nothing a newcomer cannot act on, from this process or the export's step processes (fd level).
    printed = capfd.readouterr()
    assert "Warning" not in result.output + printed.out + printed.err, printed.err


def test_the_demo_refuses_tiny_with_models_before_starting(tmp_path):
    import pytest

    from rfad.app.cli import main
    from rfad.app.demo import TINY_WITH_MODELS, run_demo

    result = CliRunner().invoke(main, ["demo", "--tiny", "--models", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and TINY_WITH_MODELS in result.output
    with pytest.raises(ValueError, match="drop --models, or drop --tiny"):
        run_demo(tmp_path / "out", tmp_path, tiny=True)
    assert not (tmp_path / "out").exists()  # nothing built
