"""Triton's own measurement beside rfad's: perf_analyzer against rfad_pipeline and rfad_judge.

    python -m benchmarks.suite.perf_analyzer_bench [--quick] [--shape tiny]

One local server of the shape's export (the repository ``pipeline_bench.py`` serves its default
judging route from: ``common.PIPELINE_INSTANCES`` rfad_pipeline instances). Two requests:
``rfad_pipeline`` with the request ``pipeline_bench.py`` times (the bottle, one candidate, one
attempt, threshold 0, the shape's steps) and ``rfad_judge`` with four ad images of the shape's
size. For each at 1, 2 and 4 concurrent clients:

- perf_analyzer (:mod:`perf_analyzer_tool`: where it comes from) over gRPC, with
  ``--bls-composing-models`` naming every other model of the repository, so that the server-side
  time of each model the pipeline reaches is split into queue, compute input, compute infer and
  compute output (an ensemble's steps are reported by perf_analyzer itself);
- then rfad's own client (``rfad.client``) with the same request at the same concurrency.

Writes benchmarks/results/perf_analyzer.json: per (model, concurrency) perf_analyzer's latency
percentiles and throughput beside the rfad client's, and the server breakdown per model. Where
perf_analyzer cannot be found, installed or run, the file holds one row saying why (skipped).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import (PIPELINE_INSTANCES, SHAPES, concurrent_calls, markdown_table, percentile, served_repo,
                               shape_models, warm_instances, write_results)
from benchmarks.suite.bls_metrics import bls_breakdown, scrape
from benchmarks.suite.perf_analyzer_input import judge_request, pipeline_request, plain_ad
from benchmarks.suite.perf_analyzer_tool import TOOL_DIR, PerfAnalyzer, PerfAnalyzerUnavailable, locate, parse_report

CONCURRENCY = (1, 2, 4)


class PerfAnalyzerFailed(RuntimeError):
    """One perf_analyzer measurement did not complete (its last lines say why)."""

REPORTS = TOOL_DIR / "reports"
PROMPT = "a bottle on a marble table, studio light"  # pipeline_bench's request
CAPTION = "red bottle"
JUDGE_IMAGES = 4


def run_perf_analyzer(tool: PerfAnalyzer, model: str, url: str, data: Path, concurrency: int,
                      composing: list[str], requests: int) -> dict:
    """One perf_analyzer measurement: ``requests`` requests per window, stable within 50 % over 3 windows."""
    command = [str(tool.binary), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data),
               "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-mode", "count_windows",
               "--measurement-request-count", str(requests), "--stability-percentage", "50", "--max-trials", "6"]
    if composing:
        command += ["--bls-composing-models", ",".join(composing)]
    done = subprocess.run(command, env=tool.environment(), capture_output=True, text=True, timeout=900)
    REPORTS.mkdir(parents=True, exist_ok=True)  # the raw reports, for a look beyond the parsed figures
    (REPORTS / f"{model}-c{concurrency}.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise PerfAnalyzerFailed(f"perf_analyzer -m {model} at concurrency {concurrency} failed: {' | '.join(tail)}")
    return parse_report(done.stdout)


def rfad_client_level(call, concurrency: int, requests: int) -> dict:
    """rfad's client figures: latency percentiles (ms) and requests/s over the wall time."""
    wall, latencies, _ = concurrent_calls(call, concurrency, requests)
    return {"rfad_requests": requests, "rfad_p50_ms": percentile(latencies, 0.5) * 1000,
            "rfad_p90_ms": percentile(latencies, 0.9) * 1000, "rfad_p99_ms": percentile(latencies, 0.99) * 1000,
            "rfad_requests_per_s": requests / wall}


def analyzer_figures(report: dict) -> dict:
    client = report["client"]
    return {"pa_p50_ms": client["p50_us"] / 1000, "pa_p90_ms": client["p90_us"] / 1000,
            "pa_p99_ms": client["p99_us"] / 1000, "pa_avg_ms": client.get("avg_us", float("nan")) / 1000,
            "pa_requests_per_s": client["throughput_infer_per_s"], "server": report["server"]}


def measure(tool: PerfAnalyzer, shape, quick: bool) -> list[dict]:
    from rfad.client import RfadClient
    from rfad.contract import JUDGE_MODEL, PIPELINE_MODEL
    from rfad.serving.launcher import TritonServer
    from rfad.tiny.products import draw_product

    _, onnx = shape_models(shape)
    repo = served_repo(shape, onnx, "perf-analyzer", pipeline_instances=PIPELINE_INSTANCES)
    product = draw_product("bottle")
    buffer = io.BytesIO()
    product.save(buffer, format="PNG")
    product_png, ad = buffer.getvalue(), plain_ad(product, shape.size)
    numbers = dict(seed=0, steps=shape.steps, max_attempts=1, threshold=0.0)
    others = sorted(p.parent.name for p in repo.glob("*/config.pbtxt") if p.parent.name != PIPELINE_MODEL)
    work = Path(tempfile.mkdtemp(prefix="rfad-perf-analyzer-"))
    inputs = {PIPELINE_MODEL: pipeline_request(product_png, PROMPT, CAPTION, **numbers),
              JUDGE_MODEL: judge_request([ad] * JUDGE_IMAGES, product_png, CAPTION)}
    rows = []
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
        client = RfadClient(server.grpc_url, retries=0)
        calls = {PIPELINE_MODEL: lambda i: client.generate(product_png, PROMPT, caption=CAPTION, **numbers),
                 JUDGE_MODEL: lambda i: client.judge([ad] * JUDGE_IMAGES, product_png, caption=CAPTION)}
        for model, request in inputs.items():
            data = work / f"{model}.json"
            data.write_text(json.dumps({"data": [request]}))
            warm_instances(calls[model])  # first requests pay for lazy imports in the python stubs
            for concurrency in CONCURRENCY:
                per_window = max(3, concurrency * (2 if quick else 3))
                print(f"[{shape.name}] {model}, {concurrency} concurrent: perf_analyzer, then rfad.client", flush=True)
                before = scrape(server.metrics_url)
                row = {"shape": shape.name, "size": shape.size, "steps": shape.steps, "model": model,
                       "concurrency": concurrency, "images_per_request": 1 if model == PIPELINE_MODEL else JUDGE_IMAGES}
                try:
                    row.update(analyzer_figures(run_perf_analyzer(tool, model, server.grpc_url, data, concurrency,
                                                                  others if model == PIPELINE_MODEL else [], per_window)))
                except PerfAnalyzerFailed as exc:  # e.g. no stable window on a busy machine: said in the row
                    row["pa_failed"] = str(exc)
                bls = bls_breakdown(before, scrape(server.metrics_url))
                row.update({**({"bls": bls} if bls else {}),
                            **rfad_client_level(calls[model], concurrency, max(2 * per_window, 4))})
                rows.append(row)
                analyzer = row.get("pa_failed") or f"p50 {row['pa_p50_ms']:.0f} ms, {row['pa_requests_per_s']:.2f}/s"
                print(f"    perf_analyzer {analyzer}; rfad.client p50 {row['rfad_p50_ms']:.0f} ms, "
                      f"{row['rfad_requests_per_s']:.2f}/s", flush=True)
        client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per measurement window")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    from rfad.deploy.profiles import DEFAULT_PROFILE, get_profile

    batching = get_profile(DEFAULT_PROFILE).components.batching  # the served repository's profile
    settings = {"shape": shape.__dict__, "concurrency": list(CONCURRENCY), "judge_images": JUDGE_IMAGES,
                "profile": DEFAULT_PROFILE, "component_max_queue_delay_us": batching.max_queue_delay_us if batching else 0,
                "pipeline_request": {"prompt": PROMPT, "caption": CAPTION, "candidates": 1, "max_attempts": 1,
                                     "threshold": 0.0}}
    try:
        tool = locate()
    except PerfAnalyzerUnavailable as exc:
        print(f"perf_analyzer skipped: {exc}")
        path = write_results("perf_analyzer", [{"shape": shape.name, "skipped": str(exc)}], settings)
        print(f"written to {path}")
        return
    settings["perf_analyzer"] = str(tool.binary)
    rows = measure(tool, shape, args.quick)
    path = write_results("perf_analyzer", rows, settings)
    print(markdown_table(rows, [("model", "model"), ("concurrency", "clients"), ("pa_p50_ms", "perf_analyzer p50 ms"),
                                ("rfad_p50_ms", "rfad.client p50 ms"), ("pa_requests_per_s", "perf_analyzer req/s"),
                                ("rfad_requests_per_s", "rfad.client req/s")]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
