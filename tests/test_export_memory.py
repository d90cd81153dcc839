"""The memory-lean export path at CI size: every step in a fresh process, weights streamed into
external data without being held, float16 converted on the way, and an export that would not
fit refused before it starts. (At SD-1.5 sizes: benchmarks/studies/sd15/sd15_shape.py.)"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto
from onnx.external_data_helper import uses_external_data

from rfad.export import memory_check
from rfad.export.cli import main as export_cli


def test_each_step_runs_in_a_fresh_process_and_streams_fp16_weights(tiny_onnx_fp16):
    """The session's fp16 export (tests/conftest.py), written with a 1 kB external-data threshold."""
    from rfad.components.manifest import ExportManifest

    components = ["text_encoder", "controlnet_unet", "rfnet"]
    manifest = ExportManifest.read(tiny_onnx_fp16 / "manifest.json", "the fp16 export")
    pids = [manifest.files[name][step]["pid"] for name in components for step in ("trace", "finish")]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    assert all(row["ok"] for row in json.loads((tiny_onnx_fp16 / "parity.json").read_text())["rows"])
    for name in components:
        folder = tiny_onnx_fp16 / name
        assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.data"], name  # work/ removed
        assert manifest.files[name]["external_data"], name
        graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        large = [t for t in graph.graph.initializer if int(np.prod(t.dims)) * 2 > 1024]
        assert large and all(uses_external_data(t) for t in large), name
        # The data file holds float16 bytes: about half the fp32 weights (a few ops stay fp32).
        data = (folder / "model.onnx.data").stat().st_size
        assert data < 0.65 * manifest.files[name]["weight_bytes_fp32"], name
        assert all(t.data_type == TensorProto.FLOAT16 for t in large if len(t.dims) > 1), name
        assert manifest.files[name]["trace"]["peak_rss_bytes"] > 0


def test_an_export_that_would_not_fit_says_so_before_starting(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(memory_check, "memory_available", lambda: 512 * 1024**2)
    result = CliRunner().invoke(export_cli, ["onnx", "--models", str(tiny_zoo), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "needs about 2.5 GiB of memory and 0.5 GiB is available (MemAvailable)" in result.output
    assert "its largest step is controlnet_unet's" in result.output and "--components" in result.output
    assert not any((tmp_path / "o").glob("*/model.onnx"))  # refused before any component was exported
    # Where the memory available cannot be read, the check refuses instead of passing unchecked.
    monkeypatch.setattr(memory_check, "memory_available", lambda: None)
    result = CliRunner().invoke(export_cli, ["onnx", "--models", str(tiny_zoo), "--out", str(tmp_path / "unread")])
    assert result.exit_code == 1 and "does not report MemAvailable" in result.output
    assert "--no-memory-check" in result.output and not (tmp_path / "unread").exists()


def test_memory_estimate_and_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    assert memory_check.memory_available(meminfo) == 20000000 * 1024
    assert memory_check.memory_available(tmp_path / "absent") is None
    weights = {"unet": 3_438_083_856, "controlnet_unet": 4_883_200_336}
    needed = memory_check.export_peak_estimate(weights)
    assert needed == memory_check.RESIDENT_PROCESSES + memory_check.step_peak_estimate(weights["controlnet_unet"])
    assert memory_check.memory_shortfall(weights, needed) is None
    assert "controlnet_unet" in memory_check.memory_shortfall(weights, needed - 1)


def test_the_estimate_covers_every_step_measured_at_sd15_sizes():
    """The refusal is only as good as the estimate: it must not be below what the SD-1.5 twin's
    export measured (benchmarks/studies/sd15/sd15_shape.py), per step and for the whole process tree."""
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "sd15_shape.json"
    rows = [r for r in json.loads(results.read_text())["rows"] if r["part"] == "export" and r["precision"] == "fp32"]
    steps = [r for r in rows if r["component"] != "all"]
    assert len(steps) >= 9
    for r in steps:
        assert max(r["trace_peak_bytes"], r["finish_peak_bytes"]) <= memory_check.step_peak_estimate(
            r["weight_bytes_fp32"]), r["component"]
    (total,) = [r for r in rows if r["component"] == "all"]
    weights = {r["component"]: r["weight_bytes_fp32"] for r in steps}
    assert total["tree_peak_bytes"] <= memory_check.export_peak_estimate(weights)
