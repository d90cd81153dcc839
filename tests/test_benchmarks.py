"""The benchmark helpers whose correctness numbers depend on: perf_analyzer inputs, the geometric law."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def test_perf_analyzer_inputs_decode_back_to_contract_requests():
    from tritonclient.utils import deserialize_bytes_tensor

    from rfad.contract import JUDGE_INPUTS, PIPELINE_INPUTS

    from benchmarks.suite import perf_analyzer_input as inputs
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
    from benchmarks.suite import availability_bench as availability
    p = 1 - (1 - q) ** k
    # Without a cap the mean of a geometric law is 1/p; the cap only lowers it.
    assert availability.expected_attempts(q, k, cap=10_000) == pytest.approx(1 / p, rel=1e-6)
    assert availability.expected_attempts(q, k) <= 1 / p
    # Monte Carlo of the same process agrees.
    rng = np.random.default_rng(0)
    draws = np.minimum(rng.geometric(p, 200_000), availability.MAX_ATTEMPTS)
    assert availability.expected_attempts(q, k) == pytest.approx(draws.mean(), rel=0.01)


def test_perf_analyzer_report_parses_into_client_figures_and_each_models_breakdown():
    """A real perf_analyzer 2.51 report (rfad_pipeline, tiny shape, --bls-composing-models) parses
    into the client's figures and, per model, a request latency that its parts add up to."""
    from benchmarks.suite import perf_analyzer_tool as tool
    text = (ROOT / "tests" / "data" / "perf_analyzer_rfad_pipeline_c1.txt").read_text()
    report = tool.parse_report(text)
    client = report["client"]
    assert client["throughput_infer_per_s"] == pytest.approx(1.83081)
    assert client["p50_us"] <= client["p90_us"] <= client["p99_us"]
    server = report["server"]
    models = {line.split(",")[0].strip() for line in text.splitlines() if line.rstrip().endswith("version: 1")}
    assert set(server) == models | {""}
    assert server[""]["success_count"] == 11 and server[""]["request_us"] == 535591
    for name, block in server.items():
        parts = ("overhead", "queue", "compute") if "compute_us" in block else (
            "overhead", "queue", "compute_input", "compute_infer", "compute_output")
        # perf_analyzer rounds each part to whole microseconds; an ensemble's compute includes its steps' queues.
        assert abs(sum(block[f"{p}_us"] for p in parts) - block["request_us"]) <= 5 or name == "rfad_judge", name
    unet = server["controlnet_unet"]  # classifier-free guidance: two samples per call
    assert unet["inference_count"] == 2 * unet["execution_count"] == 2 * unet["success_count"]
    with pytest.raises(ValueError, match="no 'Request concurrency:' section"):
        tool.parse_report("error: failed to connect")


def test_the_memory_plan_counts_every_model_instance_of_a_profile_at_its_largest_batch():
    from rfad.deploy.memory import SERVED
    from rfad.deploy.profiles import PROFILES

    from benchmarks.studies.sd15 import memory_plan as plan
    gb = 1e9
    weights = {name: 1 * gb for name in SERVED["separate"] + ("controlnet_unet",)}
    # Activations 0.1 GB per image (fp32, CPU), measured at batch 1 only: larger batches follow the line.
    fits = {name: (0.0, 0.1 * gb, {1: 0.1 * gb}) for name in weights}
    rows = {row["deployment"]: row for row in plan.plan_rows(weights, fits, "merged")}
    for name, row in rows.items():
        profile = PROFILES[name]
        servings = [profile.component(c) for c in SERVED["merged"]]
        instances = sum(s.count for s in servings)
        assert row["instances"] == instances and row["weights_gb"] == pytest.approx(instances)
        expected = sum(plan.FP16_ACTIVATION_FACTOR * 0.1 * s.max_batch_size * s.count for s in servings)
        assert row["activations_gb"] == pytest.approx(expected)
        assert row["total_gb"] == pytest.approx(instances + expected + plan.RUNTIME_OVERHEAD / gb)
        for device, (memory, kind) in plan.DEVICES.items():
            usable = memory * (plan.JETSON_USABLE if kind == "jetson" else 1.0)
            assert row[device] == ("fits" if row["total_gb"] <= usable else "no")
    # The datacenter profile batches 16 and runs two denoiser instances: it needs more than the edge one.
    assert rows["datacenter"]["total_gb"] > rows["edge"]["total_gb"]
    assert {row[d] for row in rows.values() for d in plan.DEVICES} == {"fits", "no"}


def test_bls_overhead_is_the_round_trip_beyond_tritons_own_time_weighted_by_calls():
    """pipeline_bench's overhead_ms_per_bls_call: per called model, the pipeline's round trip per
    call minus Triton's queue + compute per request, between two scrapes; averaged over calls."""
    from benchmarks.suite import bls_metrics as metrics
    before = {("rfad_bls_calls_total", "unet"): 10, ("rfad_bls_seconds_total", "unet"): 1.0,
              ("nv_inference_request_success", "unet"): 10, ("nv_inference_request_duration_us", "unet"): 900_000,
              ("nv_inference_request_success", "rfad_pipeline"): 1,
              ("nv_inference_request_duration_us", "rfad_pipeline"): 5_000_000}
    after = {**before, ("rfad_bls_calls_total", "unet"): 30, ("rfad_bls_seconds_total", "unet"): 3.5,
             ("nv_inference_request_success", "unet"): 30, ("nv_inference_request_duration_us", "unet"): 2_900_000,
             ("rfad_bls_calls_total", "vae_decoder"): 5, ("rfad_bls_seconds_total", "vae_decoder"): 1.0,
             ("nv_inference_request_success", "vae_decoder"): 5,
             ("nv_inference_request_duration_us", "vae_decoder"): 950_000,
             ("nv_inference_request_success", "rfad_pipeline"): 2,
             ("nv_inference_request_duration_us", "rfad_pipeline"): 11_000_000}
    breakdown = metrics.bls_breakdown(before, after)
    assert set(breakdown) == {"unet", "vae_decoder"}  # the pipeline itself is not a BLS call
    assert breakdown["unet"]["round_trip_ms"] == pytest.approx(125.0)
    assert breakdown["unet"]["triton_request_ms"] == pytest.approx(100.0)
    assert breakdown["unet"]["bls_overhead_ms"] == pytest.approx(25.0)
    assert breakdown["vae_decoder"]["bls_overhead_ms"] == pytest.approx(10.0)
    assert metrics.overhead_ms_per_call(breakdown) == pytest.approx((25.0 * 20 + 10.0 * 5) / 25)
    assert metrics.overhead_ms_per_call({}) is None
