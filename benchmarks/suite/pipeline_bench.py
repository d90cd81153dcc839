"""One attempt, four ways, same weights and seed: diffusers eager, rfad's loop over onnxruntime
in process (without and with the judge), and the Triton-served ``rfad_pipeline`` over gRPC
(judging through the component models, and through the ``rfad_judge`` ensemble).

    python -m benchmarks.suite.pipeline_bench [--quick] [--shapes tiny,small]

Per shape (``common.SHAPES``), one candidate, CFG, ``shape.steps`` DDIM steps, one attempt:
- ``diffusers eager``: diffusers' ``StableDiffusionControlNetInpaintPipeline`` (PyTorch, no judge);
- ``rfad onnxruntime``: :func:`rfad.pipeline.generate.generate` over the exported graphs
  (merged ControlNet+UNet), without a judge, and with RFNet judging the candidate (its
  ``judge`` timing is the judge's cost, reported against the attempt's generation);
- ``triton`` rows: ``rfad-client`` requests (threshold 0: the first attempt is kept) to a
  local Triton server, ``rfad_pipeline`` judging through depth/saliency/rfnet BLS calls
  (``components``) or one call to ``rfad_judge`` (``ensemble``); both servers run at once and
  the requests alternate between them, so the comparison of the two routes is paired.

Serving overhead per BLS call (``overhead_ms_per_bls_call``), from the components route's server
metrics over the timed requests (bls_metrics.py): the pipeline's round trip per call minus
Triton's own queue + compute time of the called model, weighted by calls. Also kept, as a check
that includes everything else a served request does: (served, components judge - in-process with
judge) / the number of component calls one request makes (counted on the in-process runner,
which the served loop mirrors call for call). Writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from rfad.serving.pipeline_parameters import DEFAULT_JUDGE

from benchmarks.suite.bls_metrics import bls_breakdown, overhead_ms_per_call, scrape
from benchmarks.common import (
    PIPELINE_INSTANCES,
    SHAPES,
    concurrent_calls,
    markdown_table,
    run_times,
    served_repo,
    shape_models,
    timing_summary,
    warm_instances,
    write_results,
)

PROMPT = "a bottle on a marble table, studio light"
MODES = ("components", "ensemble")  # the pipeline's judging routes, served side by side
CONCURRENT = 4  # clients of the throughput comparison
# Targets (issue "Serving speed"): served attempt / in-process attempt, per shape; serving
# overhead per BLS call at the small shape; served images/s at CONCURRENT clients >= in process.
RATIO_TARGETS = {"tiny": 1.10, "small": 1.03}
OVERHEAD_TARGET_MS = 1.0


def diffusers_times(zoo: Path, canvas, shape, repeats: int) -> list[float]:
    from diffusers import DDIMScheduler, StableDiffusionControlNetInpaintPipeline
    from PIL import Image

    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.model_set import ModelSet

    m = load_diffusion_models(ModelSet.resolve(zoo))
    pipe = StableDiffusionControlNetInpaintPipeline(
        vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet, controlnet=m.controlnet,
        scheduler=DDIMScheduler.from_config(m.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    images = {k: Image.fromarray(v) for k, v in
              (("image", canvas.init_image), ("mask_image", canvas.mask), ("control_image", canvas.control_image))}

    def run():
        with torch.no_grad():
            pipe(prompt=PROMPT, **images, height=shape.size, width=shape.size, num_inference_steps=shape.steps,
                 guidance_scale=7.5, eta=0.0, generator=torch.Generator("cpu").manual_seed(0), output_type="np")

    return run_times(run, repeats)


def bench_shape(shape, repeats: int) -> list[dict]:
    from rfad.canvas import CanvasSpec, prepare_canvas
    from rfad.client import RfadClient
    from rfad.pipeline.generate import generate
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.onnx_runner import OnnxRunner
    from rfad.pipeline.settings import GenerationSettings
    from rfad.serving.launcher import TritonServer
    from rfad.tiny.products import draw_product

    zoo, onnx = shape_models(shape)
    product = draw_product("bottle")
    canvas = prepare_canvas(product, CanvasSpec(width=shape.size, height=shape.size))
    settings = GenerationSettings(steps=shape.steps, seed=0, candidates=1, max_attempts=1, threshold=0.0)
    rows = []

    def row(backend: str, times: list[float], **extra) -> None:
        rows.append({"shape": shape.name, "size": shape.size, "steps": shape.steps, "backend": backend,
                     **timing_summary(times), **extra})

    print(f"[{shape.name}] diffusers eager")
    row("diffusers eager (no judge)", diffusers_times(zoo, canvas, shape, repeats))

    print(f"[{shape.name}] rfad onnxruntime in process")
    runner = OnnxRunner(onnx, merged=True)
    judge = RunnerJudge(runner)
    row("rfad onnxruntime (no judge)", run_times(lambda: generate(runner, canvas, PROMPT, settings), repeats))
    judged = []

    def judged_run():
        judged.append(generate(runner, canvas, PROMPT, settings, caption="red bottle", judge=judge))

    png = io.BytesIO()
    product.save(png, format="PNG")
    print(f"[{shape.name}] in process and triton (judging through components and through rfad_judge), interleaved")
    request = dict(caption="red bottle", seed=0, steps=shape.steps, max_attempts=1, threshold=0.0)
    with contextlib.ExitStack() as stack:
        clients, metrics_urls = {}, {}
        for mode in MODES:
            repo = served_repo(shape, onnx, f"judge-{mode}", pipeline_judge=mode, pipeline_instances=PIPELINE_INSTANCES)
            server = stack.enter_context(TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0))
            clients[mode] = RfadClient(server.grpc_url, retries=0)
            metrics_urls[mode] = server.metrics_url
            warm_instances(lambda i, m=mode: clients[m].generate(png.getvalue(), PROMPT, **request))
        judged_run()  # warm-up
        calls_before = runner.calls
        # All up, runs alternating: drift of the machine hits the three alike.
        times = {"in process": [], **{mode: [] for mode in MODES}}
        before = scrape(metrics_urls["components"])
        for _ in range(repeats):
            times["in process"] += run_times(judged_run, 1, warmup=0)
            for mode in MODES:
                times[mode] += run_times(lambda m=mode: clients[m].generate(png.getvalue(), PROMPT, **request), 1,
                                         warmup=0)
        calls = (runner.calls - calls_before) // repeats
        # The components route's BLS calls, timed by the server itself (bls_metrics): what a call
        # costs beyond the called model's queue + compute, free of the machine's drift between runs.
        bls = bls_breakdown(before, scrape(metrics_urls["components"]))
        # Throughput: CONCURRENT clients of the default route against the in-process loop,
        # which serves one request after another.
        wall, _, _ = concurrent_calls(lambda i: clients[DEFAULT_JUDGE].generate(
            png.getvalue(), PROMPT, **{**request, "seed": i}), CONCURRENT, 2 * CONCURRENT)
        served_images_per_s = 2 * CONCURRENT / wall
    judge_s = float(np.median([r.timings["judge"] for r in judged]))
    denoise_s = float(np.median([r.timings["denoise"] for r in judged]))
    row("rfad onnxruntime (+ judge)", times["in process"], component_calls=calls, judge_s=judge_s, denoise_s=denoise_s,
        judge_share_of_attempt=judge_s / denoise_s)
    in_process = float(np.median(times["in process"]))
    overhead_s = (float(np.median(times["components"])) - in_process) / calls
    overhead_ms = overhead_ms_per_call(bls)
    for mode in MODES:
        extra = {"component_calls": calls, "overhead_per_bls_call_s": overhead_s, "bls": bls,
                 "bls_overhead_ms_per_call": overhead_ms} if mode == "components" else {}
        row(f"triton rfad_pipeline (judge: {mode})", times[mode], **extra)
    eager = rows[0]["median_s"]
    for r in rows:
        r["x_diffusers"] = eager / r["median_s"]
    in_process_images_per_s = len(times["in process"]) / sum(times["in process"])
    summary = {
        "served_over_in_process": float(np.median(times[DEFAULT_JUDGE])) / in_process,
        "served_over_in_process_target": RATIO_TARGETS[shape.name],
        "overhead_ms_per_bls_call": overhead_ms, "bls_calls_per_request": calls,
        "served_minus_in_process_ms_per_bls_call": overhead_s * 1000,
        "overhead_ms_per_bls_call_target": OVERHEAD_TARGET_MS if shape.name == "small" else None,
        "served_images_per_s_concurrent": served_images_per_s, "concurrent_clients": CONCURRENT,
        "in_process_images_per_s": in_process_images_per_s,
        "served_over_in_process_throughput": served_images_per_s / in_process_images_per_s,
    }
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--shapes", default="tiny,small", help="comma-separated: tiny, small")
    args = parser.parse_args()
    rows, summary = [], {}
    for name in args.shapes.split(","):
        repeats = (3 if args.quick else 5) if name == "tiny" else (2 if args.quick else 4)
        shape_rows, summary[name] = bench_shape(SHAPES[name], repeats)
        rows += shape_rows
    faster = {}
    for shape in {r["shape"] for r in rows}:
        served = {r["backend"]: r["median_s"] for r in rows if r["shape"] == shape and r["backend"].startswith("triton")}
        faster[shape] = min(served, key=served.get)
    path = write_results("pipeline", rows, {"candidates": 1, "attempts": 1, "guidance": 7.5, "device": "cpu",
                                            "faster_served_judge": faster, "default_judge": DEFAULT_JUDGE,
                                            "pipeline_instances": PIPELINE_INSTANCES,
                                            "shapes": {n: SHAPES[n].__dict__ for n in args.shapes.split(",")}},
                         summary=summary)
    print(markdown_table(rows, [("shape", "shape"), ("backend", "backend"), ("median_s", "median s"),
                                ("min_s", "min s"), ("max_s", "max s"), ("x_diffusers", "x diffusers"),
                                ("judge_share_of_attempt", "judge / attempt"),
                                ("overhead_per_bls_call_s", "s / BLS call")]))
    for name, figures in summary.items():
        print(f"{name}: served / in process {figures['served_over_in_process']:.3f} (target "
              f"{figures['served_over_in_process_target']}), {figures['overhead_ms_per_bls_call']:.2f} ms per BLS call, "
              f"{figures['served_images_per_s_concurrent']:.3f} images/s served to {CONCURRENT} clients vs "
              f"{figures['in_process_images_per_s']:.3f} in process")
    print(f"faster served judge: {faster}\nwritten to {path}")


if __name__ == "__main__":
    main()
