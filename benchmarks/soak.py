"""Load/soak test of a served rfad repository: N clients x M requests of mixed valid and invalid requests.

    python benchmarks/soak.py [--clients 8] [--requests 25] [--duration 600] [--long]

Starts ``rfad-serve``'s server on loopback (tiny zoo repository from the benchmark cache, or
``--repo``), then runs ``--clients`` threads, each sending up to ``--requests`` requests (or
until ``--duration`` seconds pass), drawn from a fixed mix with a seeded RNG:

- valid: a generation (1-2 steps, 1-2 candidates, random seed), a judge request of 2 images;
- invalid, sent raw over gRPC (the client library would refuse most of them locally): bytes
  that are not an image, an image without alpha, steps out of range, NaN guidance, an empty
  prompt, a 3,000-character prompt, invalid UTF-8, steps as FP32 (wrong dtype), a missing
  prompt, a judge request with a broken image.

Every valid request must succeed and every invalid one must be INVALID_ARGUMENT; anything else
is listed under ``unexpected``. The resident memory of the server's process tree (tritonserver
and its python stubs, read from /proc) is sampled after a warm-up (every model at its largest
batch once, then the same concurrency) and at the end; growth beyond ``max(100 MiB, 10 %)``
is a failure. Writes benchmarks/results/soak.json (the soak
figures of docs/performance.md) unless ``--no-write``. ``--long``: 16 clients x 200 requests, 30 minutes cap.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, percentile, served_repo, shape_models, write_results  # noqa: E402

VALID = ("generate", "judge")
INVALID = ("not_an_image", "no_alpha", "steps_out_of_range", "nan_guidance", "empty_prompt", "long_prompt",
           "invalid_utf8", "steps_wrong_dtype", "missing_prompt", "judge_broken_image")
RSS_GROWTH_BOUND = (100 * 2**20, 0.10)  # bytes, fraction of the start


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack += children.get(current, [])
    return total


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class RequestMix:
    """Builds and sends one request of a kind; returns its outcome: "ok" or the gRPC status name."""

    def __init__(self, url: str, size: int):
        from rfad.tiny.products import draw_product

        self.url = url
        buffer = io.BytesIO()
        draw_product("bottle").save(buffer, format="PNG")
        self.product = buffer.getvalue()
        self.rgb = _png(np.full((64, 64, 3), 200, np.uint8))
        rng = np.random.default_rng(0)
        self.ads = [_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(2)]

    def largest_batches(self, clients: dict) -> None:
        """One request of each model at its largest batch (16 images judged; 8 candidates, i.e.
        16 rows under guidance): onnxruntime's memory arenas grow to the largest batch they
        see and keep it, which is working memory, not a leak."""
        from rfad.contract import JUDGE_MAX_IMAGES

        clients["rfad"].judge([self.ads[0]] * JUDGE_MAX_IMAGES, self.product, deadline_s=300)
        clients["rfad"].generate(self.product, "an ad", steps=1, candidates=8, num_images=8, max_attempts=1,
                                 deadline_s=300)

    def _raw(self, client, model: str, tensors: dict) -> str:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        inputs = []
        for name, (datatype, array) in tensors.items():
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            client.infer(model, inputs, client_timeout=120)
        except InferenceServerException as exc:
            return str(exc.status() or "ERROR").removeprefix("StatusCode.")
        return "ok"

    def send(self, kind: str, rng: random.Random, clients: dict) -> str:
        from rfad.client import RfadClientError

        if kind == "generate":
            try:
                clients["rfad"].generate(self.product, "a bottle on a marble table", seed=rng.randrange(10**6),
                                         steps=rng.choice((1, 2)), candidates=rng.choice((1, 2)), max_attempts=1,
                                         deadline_s=120)
                return "ok"
            except RfadClientError as exc:
                return exc.status or type(exc).__name__
        if kind == "judge":
            try:
                clients["rfad"].judge(self.ads, self.product, caption="bottle", deadline_s=120)
                return "ok"
            except RfadClientError as exc:
                return exc.status or type(exc).__name__
        obj = lambda *values: ("BYTES", np.array(list(values), dtype=np.object_))  # noqa: E731
        base = {"product_image": obj(self.product), "prompt": obj(b"an ad")}
        tensors, model = dict(base), "rfad_pipeline"
        if kind == "not_an_image":
            tensors["product_image"] = obj(bytes(rng.randrange(256) for _ in range(200)))
        elif kind == "no_alpha":
            tensors["product_image"] = obj(self.rgb)
        elif kind == "steps_out_of_range":
            tensors["steps"] = ("INT32", np.array([rng.choice((0, 151, -5, 10**6))], np.int32))
        elif kind == "nan_guidance":
            tensors["guidance_scale"] = ("FP32", np.array([rng.choice((np.nan, np.inf, -1.0))], np.float32))
        elif kind == "empty_prompt":
            tensors["prompt"] = obj(b"   ")
        elif kind == "long_prompt":
            tensors["prompt"] = obj(b"x" * 3000)
        elif kind == "invalid_utf8":
            tensors["prompt"] = obj(b"\xff\xfe\xfa bad")
        elif kind == "steps_wrong_dtype":
            tensors["steps"] = ("FP32", np.array([4.0], np.float32))
        elif kind == "missing_prompt":
            del tensors["prompt"]
        elif kind == "judge_broken_image":
            model = "rfad_judge"
            tensors = {"generated_image": obj(self.ads[0], b"\x89PNG broken"), "product_image": obj(self.product)}
        else:
            raise ValueError(f"unknown request kind {kind!r}")
        return self._raw(clients["raw"], model, tensors)


def _load(url: str, mix: RequestMix, clients: int, requests: int, deadline: float, seed: int):
    """``clients`` threads sending up to ``requests`` requests each until ``deadline``; returns
    (outcomes by kind, latencies of the valid ones that succeeded, unexpected outcomes)."""
    import tritonclient.grpc as grpcclient

    from rfad.client import RfadClient

    outcomes: dict[str, Counter] = defaultdict(Counter)
    latencies: list[float] = []
    unexpected: list[str] = []
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
                if kind in VALID and outcome == "ok":
                    latencies.append(elapsed)
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


def soak(url: str, server_pid: int, clients: int = 8, requests: int = 25, duration_s: float = 600.0,
         size: int = 128, seed: int = 0, echo=print) -> dict:
    """Run the soak against ``url`` (the server process ``server_pid``); returns the report.

    A warm-up first sends every kind once, one request per model at its largest batch, then the
    same load (``clients`` threads, a few requests each): model instances and onnxruntime's
    memory arenas reach their working size, so the memory measured afterwards shows growth
    from the soak itself, not first use.
    """
    import tritonclient.grpc as grpcclient

    from rfad.client import RfadClient

    mix = RequestMix(url, size)
    warm = {"rfad": RfadClient(url, retries=0), "raw": grpcclient.InferenceServerClient(url)}
    warm_up = {kind: mix.send(kind, random.Random(seed), warm) for kind in VALID + INVALID}  # every path once
    mix.largest_batches(warm)
    _, _, warm_unexpected = _load(url, mix, clients, 4, time.monotonic() + duration_s, seed + 1)
    rss_start = tree_rss_bytes(server_pid)
    started = time.monotonic()
    outcomes, latencies, unexpected = _load(url, mix, clients, requests, started + duration_s, seed)
    seconds = time.monotonic() - started
    unexpected = warm_unexpected + unexpected
    rss_end = tree_rss_bytes(server_pid)
    alive = warm["rfad"].is_ready()
    bound = max(RSS_GROWTH_BOUND[0], RSS_GROWTH_BOUND[1] * rss_start)
    total = sum(sum(c.values()) for c in outcomes.values())
    report = {
        "clients": clients, "requests_per_client": requests, "requests": total, "seconds": round(seconds, 2),
        "warm_up": warm_up, "outcomes": {kind: dict(counter) for kind, counter in sorted(outcomes.items())},
        "valid": sum(sum(outcomes[k].values()) for k in VALID),
        "valid_ok": sum(outcomes[k]["ok"] for k in VALID),
        "invalid": sum(sum(outcomes[k].values()) for k in INVALID),
        "invalid_rejected": sum(outcomes[k]["INVALID_ARGUMENT"] for k in INVALID),
        "unexpected": unexpected[:50], "unexpected_count": len(unexpected),
        "latency_p50_s": percentile(latencies, 0.5) if latencies else None,
        "latency_p99_s": percentile(latencies, 0.99) if latencies else None,
        "latency_mean_s": statistics.mean(latencies) if latencies else None,
        "rss_start_mib": rss_start / 2**20, "rss_end_mib": rss_end / 2**20,
        "rss_growth_mib": (rss_end - rss_start) / 2**20, "rss_growth_bound_mib": bound / 2**20,
        "server_alive": alive,
    }
    report["passed"] = bool(alive and not unexpected and rss_end - rss_start <= bound
                            and all(v == ("ok" if k in VALID else "INVALID_ARGUMENT") for k, v in warm_up.items()))
    warm["rfad"].close()
    warm["raw"].close()
    echo(f"{total} requests in {seconds:.1f} s from {clients} clients: valid {report['valid_ok']}/{report['valid']} ok, "
         f"invalid {report['invalid_rejected']}/{report['invalid']} rejected, {len(unexpected)} unexpected; RSS "
         f"{report['rss_start_mib']:.0f} -> {report['rss_end_mib']:.0f} MiB (bound +{report['rss_growth_bound_mib']:.0f})")
    return report


def main() -> None:
    from rfad.serving.launcher import TritonServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="Triton repository (default: the tiny zoo's, built into the cache)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds before the clients stop sending")
    parser.add_argument("--long", action="store_true", help="16 clients x 200 requests, 30 minutes cap")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/soak.json")
    args = parser.parse_args()
    if args.long:
        args.clients, args.requests, args.duration = 16, 200, 1800.0
    shape = SHAPES["tiny"]
    repo = args.repo
    if repo is None:
        _, onnx = shape_models(shape)
        repo = served_repo(shape, onnx, "soak", pipeline_instances=4)
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
        report = soak(server.grpc_url, server.process.pid, args.clients, args.requests, args.duration, shape.size)
    if not args.no_write:
        path = write_results("soak", [report], {"shape": shape.__dict__, "repo": str(repo), "loopback": True})
        print(f"written to {path}")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
