"""Throughput of the served pipeline against concurrency, with and without dynamic batching.

    python -m benchmarks.suite.throughput_bench [--quick] [--steps N]

Tiny shape (the test zoo, 128 px), one attempt per request (threshold 0), a local Triton
server whose ``rfad_pipeline`` has 4 instances (so up to 4 requests run their loops at once
and their component calls can meet in the dynamic batcher; 8 clients queue). For dynamic batching on and off,
candidates per attempt 1 and 4, and 1, 2, 4, 8 concurrent clients (threads, one gRPC client
each): ``concurrency + 2`` requests, images per second over the wall time, and the
p50/p90/p99 request latency. On this 2-core machine the CPU is the ceiling; the same script
measures a GPU server when pointed at one (``--url``), where batching pays.
Writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import io

from benchmarks.common import (
    PIPELINE_INSTANCES,
    SHAPES,
    concurrent_calls,
    markdown_table,
    percentile,
    served_repo,
    shape_models,
    write_results,
)

CONCURRENCY = (1, 2, 4, 8)
CANDIDATES = (1, 4)


def run_level(url: str, product: bytes, concurrency: int, candidates: int, steps: int, requests: int) -> dict:
    from rfad.client import RfadClient

    clients = [RfadClient(url, retries=0) for _ in range(concurrency)]

    def one(i: int) -> int:
        result = clients[i % concurrency].generate(product, "a bottle on a marble table", seed=i * 100, steps=steps,
                                                   candidates=candidates, num_images=candidates, max_attempts=1,
                                                   threshold=0.0)
        return len(result.images)

    wall, latencies, counts = concurrent_calls(one, concurrency, requests)
    for client in clients:
        client.close()
    images = sum(counts)
    return {"concurrency": concurrency, "candidates": candidates, "requests": requests, "images": images,
            "wall_s": wall, "images_per_s": images / wall, "requests_per_s": requests / wall,
            "p50_s": percentile(latencies, 0.5), "p90_s": percentile(latencies, 0.9), "p99_s": percentile(latencies, 0.99)}


def main() -> None:
    from rfad.serving.launcher import TritonServer
    from rfad.tiny.products import draw_product

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="concurrency 1, 2, 4 only")
    parser.add_argument("--steps", type=int, default=3, help="DDIM steps per request")
    args = parser.parse_args()
    shape = SHAPES["tiny"]
    _, onnx = shape_models(shape)
    buffer = io.BytesIO()
    draw_product("bottle").save(buffer, format="PNG")
    product = buffer.getvalue()
    levels = CONCURRENCY[:3] if args.quick else CONCURRENCY
    rows = []
    for dynamic in (True, False):
        repo = served_repo(shape, onnx, f"throughput-{'dyn' if dynamic else 'nodyn'}", dynamic_batching=dynamic,
                           pipeline_instances=PIPELINE_INSTANCES)
        with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
            # Warm-up: every rfad_pipeline instance serves its first requests (the first call in a
            # fresh python stub pays for lazy imports and first-use setup, about a second here).
            run_level(server.grpc_url, product, PIPELINE_INSTANCES, 1, args.steps, 2 * PIPELINE_INSTANCES)
            for candidates in CANDIDATES:
                for concurrency in levels:
                    row = run_level(server.grpc_url, product, concurrency, candidates, args.steps, concurrency + 2)
                    row.update(shape=shape.name, steps=args.steps, dynamic_batching=dynamic)
                    print(f"dynamic batching {dynamic}, K={candidates}, concurrency {concurrency}: "
                          f"{row['images_per_s']:.2f} images/s, p50 {row['p50_s']:.2f} s")
                    rows.append(row)
    path = write_results("throughput", rows, {"shape": shape.__dict__, "steps": args.steps, "attempts": 1,
                                              "pipeline_instances": PIPELINE_INSTANCES, "device": "cpu"})
    print(markdown_table(rows, [("dynamic_batching", "dynamic batching"), ("candidates", "K"),
                                ("concurrency", "clients"), ("requests", "requests"), ("images_per_s", "images/s"),
                                ("p50_s", "p50 s"), ("p90_s", "p90 s"), ("p99_s", "p99 s")]))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
