"""The benchmark helpers whose correctness numbers depend on: perf_analyzer inputs, the geometric law."""

from __future__ import annotations

import base64
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_perf_analyzer_inputs_decode_back_to_contract_requests():
    from tritonclient.utils import deserialize_bytes_tensor

    from rfad.contract import JUDGE_INPUTS, PIPELINE_INPUTS

    inputs = _script("perf_analyzer_input")
    for requests, fields in ((inputs.pipeline_requests(steps=20), PIPELINE_INPUTS), (inputs.judge_requests(), JUDGE_INPUTS)):
        names = {f.name for f in fields}
        required = {f.name for f in fields if not f.optional}
        for request in requests:
            assert required <= set(request) <= names
            for name, value in request.items():
                if isinstance(value, dict):  # BYTES: base64 of Triton's serialised tensor, with its shape
                    items = deserialize_bytes_tensor(base64.b64decode(value["b64"]))
                    assert len(items) == value["shape"][0] >= 1
                    if name.endswith("image"):
                        for item in items:
                            with Image.open(io.BytesIO(item)) as image:
                                assert image.size[0] >= 64
                    else:
                        assert all(item.decode("utf-8") for item in items)
                else:
                    assert isinstance(value, list) and len(value) == 1


@pytest.mark.parametrize("q, k", [(0.25, 1), (0.5, 4), (0.1, 2)])
def test_expected_attempts_is_the_geometric_mean_cut_at_the_cap(q, k):
    availability = _script("availability_bench")
    p = 1 - (1 - q) ** k
    # Without a cap the mean of a geometric law is 1/p; the cap only lowers it.
    assert availability.expected_attempts(q, k, cap=10_000) == pytest.approx(1 / p, rel=1e-6)
    assert availability.expected_attempts(q, k) <= 1 / p
    # Monte Carlo of the same process agrees.
    rng = np.random.default_rng(0)
    draws = np.minimum(rng.geometric(p, 200_000), availability.MAX_ATTEMPTS)
    assert availability.expected_attempts(q, k) == pytest.approx(draws.mean(), rel=0.01)


def test_the_performance_page_is_what_report_renders_from_the_results():
    """docs/performance.md is generated whole; a changed result or renderer fails until it is re-rendered."""
    report = _script("report")
    assert (ROOT / "docs" / "performance.md").read_text(encoding="utf-8") == report.page(), \
        "docs/performance.md is stale: run python benchmarks/report.py"
    for name in ("pipeline", "throughput", "availability"):  # the page's plots exist where it links them
        assert f"](../benchmarks/results/{name}.png)" in report.page() and (ROOT / "benchmarks" / "results" / f"{name}.png").is_file()
