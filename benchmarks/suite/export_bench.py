"""PyTorch eager vs ONNX Runtime on CPU: every exported component, and the whole denoising loop.

    python -m benchmarks.suite.export_bench [--quick] [--shapes tiny,small]

For each shape (``common.SHAPES``: tiny = the test zoo at 128 px; small = UNet channels
64/128/256 at 256 px) the models are built with random weights and exported by
``rfad-export onnx``'s own code (cached in ``benchmarks/.cache``). Then:

- per component: the module that was exported (``component_graphs``) against its graph in an
  ``onnxruntime`` session (``rfad.onnx_session``), on the same inputs, at the batch the loop
  sends it with one candidate (2 under CFG for the text encoder, ControlNet and UNet; 1 for
  the VAE and the judge components);
- the loop: one request, one candidate, ``shape.steps`` DDIM steps with CFG, through
  :func:`rfad.pipeline.generate.generate` with the torch runner, the onnxruntime runner with
  separate ControlNet and UNet graphs, and with the merged ``controlnet_unet`` graph.

Median of repeated runs after a warm-up. Writes benchmarks/results/export.json and prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import SHAPES, markdown_table, shape_models, time_runs, write_results

# Batch the loop sends each component with one candidate per attempt and guidance on.
LOOP_BATCH = {"text_encoder": 2, "controlnet": 2, "unet": 2, "controlnet_unet": 2}


def component_rows(shape, zoo: Path, onnx: Path, repeats: int) -> list[dict]:
    from rfad.components.samples import sample_inputs
    from rfad.export.api import component_graphs, load_models, vocab_size_of

    from rfad.components.manifest import ExportManifest
    from rfad.models.model_set import ModelSet
    from rfad.onnx_session import open_session

    diffusion, judge = load_models(ModelSet.resolve(zoo))
    graphs = component_graphs(diffusion, judge)
    manifest = ExportManifest.read(onnx / "manifest.json", f"ONNX folder {onnx}")
    rows = []
    for name, spec in manifest.specs.items():
        graph = graphs[name]
        batch = LOOP_BATCH.get(name, 1)
        feed = sample_inputs(spec, batch, shape.size, shape.size, vocab=vocab_size_of(spec, diffusion, judge))
        tensors = [torch.from_numpy(feed[n]) for n in spec.input_names]
        session = open_session(onnx / manifest.files[name]["file"], manifest.precision)

        def eager():
            with torch.no_grad():
                graph(*tensors)

        timings = {"torch eager": time_runs(eager, repeats), "onnxruntime": time_runs(lambda: session.run(None, feed), repeats)}
        for backend, timing in timings.items():
            rows.append({"shape": shape.name, "scope": name, "batch": batch, "backend": backend, **timing,
                         "speedup_vs_eager": timings["torch eager"]["median_s"] / timing["median_s"]})
    return rows


def loop_rows(shape, zoo: Path, onnx: Path, repeats: int) -> list[dict]:
    from rfad.canvas import CanvasSpec, prepare_canvas
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.generate import generate
    from rfad.pipeline.onnx_runner import OnnxRunner
    from rfad.pipeline.settings import GenerationSettings
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.tiny.products import draw_product

    canvas = prepare_canvas(draw_product("bottle"), CanvasSpec(width=shape.size, height=shape.size))
    settings = GenerationSettings(steps=shape.steps, seed=0, candidates=1, max_attempts=1)
    runners = {
        "torch eager": TorchRunner(load_diffusion_models(ModelSet.resolve(zoo))),
        "onnxruntime (separate ControlNet, UNet)": OnnxRunner(onnx, merged=False),
        "onnxruntime (merged controlnet_unet)": OnnxRunner(onnx, merged=True),
    }
    timings = {backend: time_runs(lambda r=runner: generate(r, canvas, "a bottle on a marble table", settings),
                                  repeats) for backend, runner in runners.items()}
    eager = timings["torch eager"]["median_s"]
    return [{"shape": shape.name, "scope": f"denoising loop ({shape.steps} steps, CFG, {shape.size} px)", "batch": 2,
             "backend": backend, **timing, "speedup_vs_eager": eager / timing["median_s"]}
            for backend, timing in timings.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--shapes", default="tiny,small", help="comma-separated: tiny, small")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    rows = []
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        zoo, onnx = shape_models(shape)
        print(f"[{name}] timing components and the loop ({repeats} repeats)")
        rows += component_rows(shape, zoo, onnx, repeats)
        rows += loop_rows(shape, zoo, onnx, max(2, repeats // 2))
    path = write_results("export", rows, {"repeats": repeats, "device": "cpu",
                                          "shapes": {n: SHAPES[n].__dict__ for n in args.shapes.split(",")}})
    print(markdown_table(rows, [("shape", "shape"), ("scope", "component / loop"), ("batch", "batch"),
                                ("backend", "backend"), ("median_s", "median s"), ("min_s", "min s"),
                                ("max_s", "max s"), ("speedup_vs_eager", "x eager")]))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
