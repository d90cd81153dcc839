"""Availability economics: attempts and latency to the first Available image against the
per-candidate availability rate, measured on the served pipeline and set beside the geometric
expectation; K candidates per attempt against K = 1.

    python -m benchmarks.suite.availability_bench [--quick]

The tiny zoo's RFNet is untrained, so its p(Available) is a fixed function of the image; the
per-candidate rate q is set through the request threshold: the thresholds are quantiles of
p(Available) over calibration candidates (seeds no request uses) judged in process by the
same exported graphs. For q in 0.25, 0.5, 0.75 and K in 1, 4, M served requests (max_attempts
20) record the attempts used and the latency. A request succeeds on an attempt with
probability P = 1 - (1 - q)^K, so attempts follow a geometric law cut at the cap:
E[attempts] = sum_{a<20} a P (1 - P)^(a-1) + 20 (1 - P)^19. Writes benchmarks/results/availability.json.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHAPES, markdown_table, served_repo, shape_models, write_results

RATES = (0.25, 0.5, 0.75)
CANDIDATES = (1, 4)
MAX_ATTEMPTS = 20
STEPS = 2
PROMPT = "a bottle on a marble table"


def expected_attempts(q: float, k: int, cap: int = MAX_ATTEMPTS) -> float:
    p = 1 - (1 - q) ** k
    return sum(a * p * (1 - p) ** (a - 1) for a in range(1, cap)) + cap * (1 - p) ** (cap - 1)


def calibration(onnx: Path, canvas, n: int) -> np.ndarray:
    """p(Available) of ``n`` candidates (seeds 10^6 + i), judged in process by the exported graphs."""
    from rfad.pipeline.generate import generate
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.onnx_runner import OnnxRunner
    from rfad.pipeline.settings import GenerationSettings

    runner = OnnxRunner(onnx, merged=True)
    judge = RunnerJudge(runner)
    values = []
    for start in range(0, n, 8):
        settings = GenerationSettings(steps=STEPS, seed=10**6 + start, candidates=8, num_images=8, max_attempts=1,
                                      threshold=0.0)
        result = generate(runner, canvas, PROMPT, settings, caption="red bottle", judge=judge)
        values += [c.p_available for c in result.candidates]
    return np.array(values[:n])


def main() -> None:
    from rfad.canvas import CanvasSpec, prepare_canvas
    from rfad.client import RfadClient
    from rfad.serving.launcher import TritonServer
    from rfad.tiny.products import draw_product

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per setting")
    args = parser.parse_args()
    requests = 8 if args.quick else 10
    shape = SHAPES["tiny"]
    _, onnx = shape_models(shape)
    product = draw_product("bottle")
    buffer = io.BytesIO()
    product.save(buffer, format="PNG")
    canvas = prepare_canvas(product, CanvasSpec(width=shape.size, height=shape.size))
    p_available = calibration(onnx, canvas, 64)
    print(f"calibration: p(Available) of {len(p_available)} candidates, min {p_available.min():.4f}, "
          f"median {np.median(p_available):.4f}, max {p_available.max():.4f}")
    rows = []
    repo = served_repo(shape, onnx, "availability", max_attempts_cap=MAX_ATTEMPTS)
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
        client = RfadClient(server.grpc_url, retries=0)
        client.generate(buffer.getvalue(), PROMPT, steps=STEPS, max_attempts=1)  # warm-up
        for q in RATES:
            threshold = float(np.quantile(p_available, 1 - q))
            calibrated_q = float((p_available >= threshold).mean())
            for k in CANDIDATES:
                attempts, latencies, available = [], [], []
                for r in range(requests):
                    start = time.perf_counter()
                    result = client.generate(buffer.getvalue(), PROMPT, caption="red bottle", seed=r * 1000,
                                             steps=STEPS, candidates=k, max_attempts=MAX_ATTEMPTS, threshold=threshold)
                    latencies.append(time.perf_counter() - start)
                    attempts.append(result.attempts)
                    available.append(result.available[0])
                expected = expected_attempts(calibrated_q, k)
                rows.append({"target_rate": q, "calibrated_rate": calibrated_q, "threshold": threshold,
                             "candidates": k, "requests": requests, "mean_attempts": statistics.mean(attempts),
                             "expected_attempts": expected, "mean_candidates": k * statistics.mean(attempts),
                             "available_fraction": sum(available) / requests,
                             "mean_latency_s": statistics.mean(latencies),
                             "median_latency_s": statistics.median(latencies),
                             "latency_per_attempt_s": sum(latencies) / sum(attempts)})
                print(f"q {calibrated_q:.3f} K {k}: attempts {rows[-1]['mean_attempts']:.2f} (geometric "
                      f"{expected:.2f}), latency {rows[-1]['mean_latency_s']:.2f} s")
    path = write_results("availability", rows, {"shape": shape.__dict__, "steps": STEPS, "max_attempts": MAX_ATTEMPTS,
                                                "calibration_candidates": len(p_available), "device": "cpu"})
    print(markdown_table(rows, [("calibrated_rate", "q per candidate"), ("candidates", "K"),
                                ("mean_attempts", "attempts (measured)"), ("expected_attempts", "attempts (geometric)"),
                                ("mean_candidates", "candidates generated"), ("mean_latency_s", "latency s"),
                                ("latency_per_attempt_s", "s / attempt")]))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
