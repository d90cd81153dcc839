"""Load/soak test of a served rfad repository: N clients x M requests of mixed valid and invalid requests.

    python -m benchmarks.suite.soak [--clients 8] [--requests 25] [--duration 600] [--sizes fixed|mixed] [--long]

Starts ``rfad-serve``'s server on loopback (tiny zoo repository from the benchmark cache, or
``--repo``), then runs ``--clients`` threads, each sending up to ``--requests`` requests (or
until ``--duration`` seconds pass), half valid, half invalid, drawn with a seeded RNG
(benchmarks/suite/soak_requests.py: the kinds, and the ``fixed`` and ``mixed`` image sizes):

- valid: a generation (1-2 steps, 1-2 candidates, random seed), a judge request;
- invalid, sent raw over gRPC (the client library would refuse most of them locally): bytes
  that are not an image, an image without alpha, steps out of range, NaN guidance, an empty
  prompt, a 3,000-character prompt, invalid UTF-8, steps as FP32 (wrong dtype), a missing
  prompt, a judge request with a broken image.

Every valid request must succeed and every invalid one must be INVALID_ARGUMENT; anything else
is listed under ``unexpected``. Memory: after a warm-up (every model at its largest batch and
largest images, the largest requests of the mix from every client at once, then the same load),
the resident memory of tritonserver and of every python stub, by model instance
(benchmarks/suite/server_memory.py), is sampled every
``--interval`` seconds with the number of requests done. The report gives per process the RSS
after warm-up, at the end and at most, and the slope in KB per request over the second half
of the run (least squares), and the same for the total. Bounds (``passed``): no process above
:data:`PEAK_BOUND` times its size after warm-up, the total's growth within
:data:`RSS_GROWTH_BOUND`, and, for runs of at least :data:`SLOPE_MIN_REQUESTS` requests (a
shorter run's slope is noise), the total's slope within :data:`SLOPE_BOUND_KB`.

Writes benchmarks/results/soak.json (soak_long.json with ``--long``; both feed
docs/performance.md) unless ``--no-write``.
``--long``: 16 clients x 625 requests (10,000) with mixed sizes, no time cap before 4 hours.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks.common import SHAPES, percentile, served_repo, shape_models, write_results
from benchmarks.suite.server_memory import MemorySampler, memory_report
from benchmarks.suite.soak_requests import INVALID, VALID, RequestMix

RSS_GROWTH_BOUND = (100 * 2**20, 0.10)  # total after warm-up: bytes, fraction of the start
PEAK_BOUND = 1.5  # any process: its largest sample over its size after warm-up
SLOPE_BOUND_KB = 2.0  # total, KB per request, second half of the run
SLOPE_MIN_REQUESTS = 2000


def _load(mix: RequestMix, url: str, clients: int, requests: int, deadline: float, seed: int,
          done: list[int] | None = None):
    """``clients`` threads sending up to ``requests`` requests each until ``deadline``; returns
    (outcomes by kind, latencies of the valid ones that succeeded by kind, unexpected outcomes).
    ``done[0]`` counts finished requests as they finish (the memory sampler reads it)."""
    import tritonclient.grpc as grpcclient

    from rfad.client import RfadClient

    outcomes: dict[str, Counter] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    unexpected: list[str] = []
    done = done if done is not None else [0]
    lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        own = {"rfad": RfadClient(url, retries=0), "raw": grpcclient.InferenceServerClient(url)}
        for _ in range(requests):
            if time.monotonic() > deadline:
                break
            # Half valid, half invalid: the valid ones carry the load, the invalid ones the abuse.
            kind = rng.choice(VALID) if rng.random() < 0.5 else rng.choice(INVALID)
            start = time.perf_counter()
            outcome = mix.send(kind, rng, own)
            elapsed = time.perf_counter() - start
            expected = "ok" if kind in VALID else "INVALID_ARGUMENT"
            with lock:
                outcomes[kind][outcome] += 1
                done[0] += 1
                if kind in VALID and outcome == "ok":
                    latencies[kind].append(elapsed)
                if outcome != expected:
                    unexpected.append(f"{kind}: {outcome}")
        own["rfad"].close()
        own["raw"].close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, latencies, unexpected


def _latency(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_s": percentile(values, 0.5), "p99_s": percentile(values, 0.99),
            "mean_s": statistics.mean(values)}


def soak(url: str, server_pid: int, clients: int = 8, requests: int = 25, duration_s: float = 600.0,
         size: int = 128, seed: int = 0, echo=print, mixed: bool = False, interval_s: float = 2.0) -> dict:
    """Run the soak against ``url`` (the server process ``server_pid``); returns the report.

    A warm-up first sends every kind once, then each model's largest request (with ``mixed``
    sizes, its largest images too), then the largest requests of the mix from all ``clients`` at
    once, so every pipeline instance serves one (:meth:`RequestMix.largest`), then the same load
    (``clients`` threads, a few requests each): model instances, onnxruntime's arenas and the python backend's shared
    memory reach their working size, so the memory measured afterwards shows growth from the
    soak itself, not first use.
    """
    import tritonclient.grpc as grpcclient

    from rfad.client import RfadClient

    mix = RequestMix(size, mixed)
    warm = {"rfad": RfadClient(url, retries=0), "raw": grpcclient.InferenceServerClient(url)}
    warm_up = {kind: mix.send(kind, random.Random(seed), warm) for kind in VALID + INVALID}  # every path once
    mix.largest(url, clients)
    _, _, warm_unexpected = _load(mix, url, clients, 4, time.monotonic() + duration_s, seed + 1)
    done = [0]
    with MemorySampler(server_pid, lambda: done[0], interval_s) as sampler:
        started = time.monotonic()
        outcomes, latencies, unexpected = _load(mix, url, clients, requests, started + duration_s, seed, done)
        seconds = time.monotonic() - started
    unexpected = warm_unexpected + unexpected
    alive = warm["rfad"].is_ready()
    memory = memory_report(sampler.samples)
    total = memory["total"]
    bound_mib = max(RSS_GROWTH_BOUND[0], RSS_GROWTH_BOUND[1] * total["rss_start_mib"] * 2**20) / 2**20
    requests_done = sum(sum(c.values()) for c in outcomes.values())
    slope_judged = requests_done >= SLOPE_MIN_REQUESTS and total["slope_kb_per_request"] is not None
    all_latencies = [v for values in latencies.values() for v in values]
    report = {
        "clients": clients, "requests_per_client": requests, "requests": requests_done, "seconds": round(seconds, 2),
        "sizes": "mixed" if mixed else "fixed",
        "warm_up": warm_up, "outcomes": {kind: dict(counter) for kind, counter in sorted(outcomes.items())},
        "valid": sum(sum(outcomes[k].values()) for k in VALID),
        "valid_ok": sum(outcomes[k]["ok"] for k in VALID),
        "invalid": sum(sum(outcomes[k].values()) for k in INVALID),
        "invalid_rejected": sum(outcomes[k]["INVALID_ARGUMENT"] for k in INVALID),
        "unexpected": unexpected[:50], "unexpected_count": len(unexpected),
        "latency_p50_s": percentile(all_latencies, 0.5) if all_latencies else None,
        "latency_p99_s": percentile(all_latencies, 0.99) if all_latencies else None,
        "latency_mean_s": statistics.mean(all_latencies) if all_latencies else None,
        "latency_by_kind": {kind: _latency(latencies[kind]) for kind in VALID},
        "rss_start_mib": total["rss_start_mib"], "rss_end_mib": total["rss_end_mib"],
        "rss_max_mib": total["rss_max_mib"], "rss_growth_mib": total["rss_max_mib"] - total["rss_start_mib"],
        "rss_growth_bound_mib": bound_mib, "rss_slope_kb_per_request": total["slope_kb_per_request"],
        "slope_bound_kb_per_request": SLOPE_BOUND_KB, "slope_judged": slope_judged,
        "peak_bound": PEAK_BOUND, "processes": memory["processes"], "memory_total": total,
        "memory_series": memory["series"],
        "server_alive": alive,
    }
    over_peak = [p["process"] for p in memory["processes"] if p["peak_over_start"] > PEAK_BOUND]
    report["processes_over_peak_bound"] = over_peak
    report["passed"] = bool(
        alive and not unexpected and report["rss_growth_mib"] <= bound_mib and not over_peak
        and (not slope_judged or total["slope_kb_per_request"] <= SLOPE_BOUND_KB)
        and all(v == ("ok" if k in VALID else "INVALID_ARGUMENT") for k, v in warm_up.items()))
    warm["rfad"].close()
    warm["raw"].close()
    slope = total["slope_kb_per_request"]
    echo(f"{requests_done} requests in {seconds:.1f} s from {clients} clients ({report['sizes']} sizes): valid "
         f"{report['valid_ok']}/{report['valid']} ok, invalid {report['invalid_rejected']}/{report['invalid']} rejected, "
         f"{len(unexpected)} unexpected; RSS {total['rss_start_mib']:.0f} -> {total['rss_end_mib']:.0f} MiB (max "
         f"{total['rss_max_mib']:.0f}, bound +{bound_mib:.0f}), slope "
         + ("n/a" if slope is None else f"{slope:.2f} KB/request") + ("" if slope_judged else " (not judged: short run)"))
    for row in memory["processes"]:
        echo(f"  {row['process']:<24} {row['rss_start_mib']:8.1f} -> {row['rss_end_mib']:8.1f} MiB (max "
             f"{row['peak_over_start']:.2f}x; anon {row['anon_end_mib']:.0f}, shm {row['shmem_end_mib']:.0f}"
             + ("" if row["shm_region_end_mib"] is None else f", region {row['shm_region_end_mib']:.0f}") + ") slope "
             + ("n/a" if row["slope_kb_per_request"] is None else f"{row['slope_kb_per_request']:.2f} KB/request"))
    return report


def main() -> None:
    from rfad.serving.launcher import TritonServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="Triton repository (default: the tiny zoo's, built into the cache)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--duration", type=float, help="seconds before the clients stop sending (default 600; "
                        "--long: 4 hours)")
    parser.add_argument("--sizes", choices=("fixed", "mixed"), default="fixed",
                        help="fixed: one product and canvas-sized ads; mixed: sizes drawn per request (soak_requests.py)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between memory samples")
    parser.add_argument("--long", action="store_true", help="16 clients x 625 requests (10,000), mixed sizes, 4 h cap")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    if args.long:
        args.clients, args.requests, args.sizes = 16, 625, "mixed"
    if args.duration is None:
        args.duration = 4 * 3600.0 if args.long else 600.0
    shape = SHAPES["tiny"]
    repo = args.repo
    if repo is None:
        _, onnx = shape_models(shape)
        repo = served_repo(shape, onnx, "soak", pipeline_instances=4)
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
        report = soak(server.grpc_url, server.process.pid, args.clients, args.requests, args.duration, shape.size,
                      mixed=args.sizes == "mixed", interval_s=args.interval)
    if not args.no_write:
        path = write_results("soak_long" if args.long else "soak", [report],
                             {"shape": shape.__dict__, "repo": str(repo), "loopback": True})
        print(f"written to {path}")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
