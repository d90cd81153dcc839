"""``rfad demo``: every stage once, end to end, on a fresh machine.

tiny models (or yours) -> ONNX with parity -> Triton repository -> the local Triton server ->
real gRPC requests for sample products -> images and a report (attempts, probabilities,
latencies). Orchestration only; each stage is the same library call its own command makes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rfad.contract import DEFAULTS
from rfad.tiny.products import SAMPLE_PRODUCTS


def run_demo(out: Path, models: Path | None = None, size: int = 256, steps: int = 8, max_attempts: int = 3,
             threshold: float = DEFAULTS.threshold, echo=print) -> dict:
    from rfad.client import RfadClient
    from rfad.export.onnx_export import export_onnx
    from rfad.export.triton_repo import write_triton_repo
    from rfad.models.model_set import ModelSet
    from rfad.serving.launcher import TritonServer
    from rfad.tiny.products import write_sample_products
    from rfad.tiny.zoo import build_tiny_zoo

    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    if models is None:
        echo("1/5 building the tiny model zoo (RANDOM weights: images will be noise, verdicts meaningless)")
        model_set = build_tiny_zoo(out / "zoo")
    else:
        echo(f"1/5 using the models in {models}")
        model_set = ModelSet.resolve(models)
    products = write_sample_products(out / "products")
    timings["models_s"] = time.perf_counter() - start

    echo("2/5 exporting every component to ONNX (with parity checks against PyTorch)")
    t0 = time.perf_counter()
    export_onnx(model_set, out / "onnx", echo=lambda line: echo("    " + line))
    timings["export_s"] = time.perf_counter() - t0

    echo("3/5 writing the Triton model repository (python backend, merged ControlNet+UNet)")
    write_triton_repo(out / "onnx", out / "repo", backend="python", canvas_size=size)

    echo("4/5 starting Triton (127.0.0.1, free ports)")
    t0 = time.perf_counter()
    requests = []
    with TritonServer(out / "repo", grpc_port=0, http_port=0, metrics_port=0, log_file=out / "server.log") as server:
        timings["server_start_s"] = time.perf_counter() - t0
        echo(f"    ready in {timings['server_start_s']:.1f} s at {server.grpc_url}")
        client = RfadClient(server.grpc_url)
        echo(f"5/5 sending {len(products)} gRPC requests ({steps} steps, up to {max_attempts} attempts, {size} px)")
        for i, (kind, path) in enumerate(products.items()):
            result = client.generate(path, prompt=f"{SAMPLE_PRODUCTS[kind]} on a marble table, studio light",
                                     caption=SAMPLE_PRODUCTS[kind], seed=i * 100, steps=steps,
                                     max_attempts=max_attempts, threshold=threshold)
            images = result.save(out / "images", stem=kind)
            requests.append({"product": kind, "images": [str(p) for p in images], "available": result.available,
                             "attempts": result.attempts, "seeds": result.seeds,
                             "probabilities": result.verdicts(), "latency_s": round(result.latency_s, 3)})
            echo(f"    {kind:<7} attempts {result.attempts}  available {result.available[0]}  "
                 f"p(Available) {result.probabilities[0][0]:.3f}  {result.latency_s:.2f} s")
    report = {"random_weights": models is None, "size": size, "steps": steps, "max_attempts": max_attempts,
              "threshold": threshold, "timings_s": {k: round(v, 2) for k, v in timings.items()}, "requests": requests}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# rfad demo report", "",
             "Weights are RANDOM (tiny zoo): the backgrounds are noise and RFNet's verdicts mean nothing; the "
             "pipeline, export, server and protocol are the real ones." if models is None else f"Models: {models}",
             "", f"Canvas {size} px, {steps} DDIM steps, up to {max_attempts} attempts, threshold {threshold}.", "",
             "| product | attempts | available | p(Available) | latency s | image |", "|---|---|---|---|---|---|"]
    for r in requests:
        lines.append(f"| {r['product']} | {r['attempts']} | {r['available'][0]} | "
                     f"{r['probabilities'][0]['Available']:.3f} | {r['latency_s']} | {Path(r['images'][0]).name} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items())]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    echo(f"report: {out / 'report.md'}, images: {out / 'images'}")
    echo(f"next: `rfad-serve --repo {out / 'repo'}` serves this repository; the README's tour runs each stage by hand")
    return report
