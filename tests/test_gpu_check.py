"""benchmarks/gpu_check.py in its --tiny mode on the CPU: every part runs the code the GPU run runs
(twin reuse, generation beside diffusers, the judge, an RFFT optimiser step, RFNet training) and
writes the figures docs/performance.md's GPU section reads; the section says when no GPU run exists."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tiny_zoo, tmp_path_factory):
    """One --tiny run (compile skipped: inductor on two CPU cores takes minutes) over the session's zoo."""
    check = _script("gpu_check")
    root = tmp_path_factory.mktemp("gpu-check")
    (root / "work").mkdir()
    (root / "work" / "zoo-tiny").symlink_to(tiny_zoo)  # the twin part finds a zoo of its shape and reuses it
    threads = torch.get_num_threads()
    try:
        code = check.main(["--tiny", "--work", str(root / "work"), "--results-dir", str(root), "--threads", "1",
                           "--skip", "compile"])
    finally:
        torch.set_num_threads(threads)
    return code, json.loads((root / "gpu_cpu-tiny.json").read_text()), check


def test_tiny_run_measures_every_part(tiny_run):
    code, result, check = tiny_run
    plan = check.TINY
    assert code == 0, result["parts"]
    assert result["parts"]["compile"]["status"] == "skipped" and result["parts"]["compile"]["reason"] == "--skip"
    assert all(result["parts"][part]["status"] == "ok" for part in ("twin", "generation", "judge", "rfft", "rfnet"))
    assert result["settings"]["clock"] == "wall time" and result["settings"]["dtype"] == "fp32"
    rows = result["rows"]
    assert [r["reused"] for r in rows if r["part"] == "twin"] == [str(Path(result["settings"]["work"]) / "zoo-tiny")]

    generation = [r for r in rows if r["part"] == "generation"]
    assert sorted((r["backend"].split()[0], r["candidates"]) for r in generation) == sorted(
        (backend, k) for backend in ("rfad", "diffusers") for k in plan.candidates)
    for row in generation:
        assert row["attempt_s"] > 0 and row["peak_bytes"] > 0
        assert row["attempt_it_s"] == pytest.approx(plan.steps / row["attempt_s"])
        if row["backend"].startswith("rfad"):
            diffusers = next(r for r in generation if r["backend"].startswith("diffusers")
                             and r["candidates"] == row["candidates"])
            assert row["x_diffusers"] == pytest.approx(diffusers["attempt_s"] / row["attempt_s"])
            assert row["step_it_s"] > 0 and row["noise_finite"] is True

    assert [r["batch"] for r in rows if r["part"] == "judge"] == list(plan.judge_batches)
    assert all(r["latency_s"] > 0 and r["peak_bytes"] > 0 for r in rows if r["part"] == "judge")

    step, *micro = [r for r in rows if r["part"] == "rfft"]
    assert (step["local_batch"], step["grad_accum"], step["grad_checkpointing"]) == (plan.rfft_batch, plan.rfft_accum, True)
    assert len(micro) == plan.rfft_accum
    assert step["optimizer_step_s"] >= sum(r["seconds"] for r in micro) > 0
    assert all(plan.rfft_ddim_steps - plan.rfft_last_k <= r["t_star_index"] < plan.rfft_ddim_steps for r in micro)
    assert all(math.isfinite(r["f_ac"]) and r["reg"] >= 0 for r in micro)
    # The timed step is the second: the ControlNet has moved from its teacher, so L_CC is no longer 0.
    assert any(r["reg"] > 0 for r in micro)
    assert step["peak_bytes"] >= step["weights_bytes"] > 0

    (rfnet,) = [r for r in rows if r["part"] == "rfnet"]
    assert rfnet["batch"] == plan.rfnet_batches[0] and rfnet["samples_per_s"] > 0


def test_the_gpu_section_renders_runs_of_the_sd15_plan_only(tiny_run, tmp_path):
    _, result, _ = tiny_run
    from benchmarks.gpu import report
    (tmp_path / "gpu_cpu-tiny.json").write_text(json.dumps(result))
    section = "\n".join(report.gpu_section(tmp_path))
    assert "**Not run on a GPU yet.**" in section and "gpu_cpu-tiny.json" not in section

    # The same run presented as the SD-1.5 plan on a GPU renders its tables and the anchors.
    result["settings"]["plan"]["shape"] = "sd15"
    result["machine"]["gpu"] = "Test GPU"
    result["parts"]["compile"] = {"status": "error", "error": "OutOfMemoryError: CUDA out of memory.\nTried | x",
                                  "traceback": "Traceback ...", "seconds": 1.0}
    (tmp_path / "gpu_test-gpu.json").write_text(json.dumps(result))
    section = "\n".join(report.gpu_section(tmp_path))
    assert "Not run on a GPU yet" not in section
    assert "### Test GPU (`gpu_test-gpu.json`)" in section
    assert "x diffusers" in section and "stable-fast" in section and "RFFT, one optimiser step" in section
    # A failed part is one table row: its error on one line, pipes escaped, no traceback.
    assert "| compile | error | 1 |  |  | OutOfMemoryError: CUDA out of memory. Tried \\| x |" in section
    assert "Traceback" not in section


def test_the_sd15_plan_is_refused_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        _script("gpu_check").main(["--results-dir", str(tmp_path), "--work", str(tmp_path)])
