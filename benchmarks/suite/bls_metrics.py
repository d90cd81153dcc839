"""What one BLS call costs, from the server's own metrics: the pipeline's round trip per call
(``rfad_bls_seconds_total`` / ``rfad_bls_calls_total``, rfad.serving.metrics) against Triton's
time for the called model per request (``nv_inference_request_duration_us`` /
``nv_inference_request_success``: queue + compute). Both benchmarks that serve the pipeline
(pipeline_bench.py, perf_analyzer_bench.py) scrape /metrics before and after their requests.
"""

from __future__ import annotations

import re
import urllib.request

_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\} ([0-9.eE+-]+)$')


def scrape(url: str) -> dict[tuple[str, str], float]:
    """Triton's /metrics page -> (metric, model or component label) -> value, for the counters used here."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample and (sample.group(1).startswith("nv_inference_") or sample.group(1).startswith("rfad_bls_")):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', sample.group(2)))
            values[(sample.group(1), labels.get("component", labels.get("model", "")))] = float(sample.group(3))
    return values


def bls_breakdown(before: dict, after: dict) -> dict[str, dict]:
    """Per model the pipeline called between two scrapes: calls, the pipeline's round trip per
    call (``rfad_bls_seconds_total``), Triton's own time of that model per request
    (``nv_inference_request_duration_us``: queue + compute) and the difference, what one BLS
    call costs beyond the model's work (all in ms)."""
    def delta(metric: str, name: str) -> float:
        return after.get((metric, name), 0.0) - before.get((metric, name), 0.0)

    result = {}
    for metric, name in after:
        calls = delta("rfad_bls_calls_total", name) if metric == "rfad_bls_calls_total" else 0
        served = delta("nv_inference_request_success", name)
        if calls <= 0 or served <= 0:
            continue
        round_trip = delta("rfad_bls_seconds_total", name) / calls * 1000
        request = delta("nv_inference_request_duration_us", name) / served / 1000
        result[name] = {"calls": calls, "round_trip_ms": round_trip, "triton_request_ms": request,
                        "bls_overhead_ms": round_trip - request}
    return result


def overhead_ms_per_call(breakdown: dict[str, dict]) -> float | None:
    """The BLS overhead per call over all models of a :func:`bls_breakdown`, weighted by calls."""
    calls = sum(row["calls"] for row in breakdown.values())
    if not calls:
        return None
    return sum(row["bls_overhead_ms"] * row["calls"] for row in breakdown.values()) / calls
