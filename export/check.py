"""``rfad-export check``: one component, PyTorch against its ONNX graph (and TensorRT engine), through polygraphy.

For users debugging a model: the same comparison ``polygraphy run --onnxrt --trt`` makes,
with the PyTorch module as the reference and inputs in the ranges the pipeline feeds (token
ids in the vocabulary, timesteps in [0, 1000), images in [0, 1]) at a shape the user picks.
polygraphy's ``Comparator`` runs every runner on the same feed and judges each output with
``|a - b| <= atol + rtol * |b|``; the report adds the max absolute and relative difference per
output, so a failure says how far off, not just that it is.

polygraphy's own ``PytRunner`` always moves inputs to CUDA, hence :class:`TorchModuleRunner`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from rfad.components.manifest import ExportManifest
from rfad.components.specs import ComponentSpec
from rfad.export.tolerances import CHECK_TOLERANCES
from rfad.models.model_set import ModelSet


class TorchModuleRunner(BaseRunner):
    """A polygraphy runner over an ``nn.Module`` whose forward takes the spec's inputs in order."""

    def __init__(self, module: torch.nn.Module, spec: ComponentSpec, device: str = "cpu", name: str | None = None):
        super().__init__(name=name, prefix="pytorch")
        self.module, self.spec, self.device = module, spec, torch.device(device)

    def activate_impl(self):
        self.module.to(self.device).eval()

    def get_input_metadata_impl(self):
        meta = TensorMetadata()
        for tensor in self.spec.inputs:
            meta.add(tensor.name, np.dtype(tensor.dtype), list(tensor.dims))
        return meta

    def infer_impl(self, feed_dict):
        inputs = [torch.from_numpy(np.ascontiguousarray(feed_dict[name])).to(self.device)
                  for name in self.spec.input_names]
        start = time.perf_counter()
        with torch.no_grad():
            outputs = self.module(*inputs)
        self.inference_time = time.perf_counter() - start
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return OrderedDict((name, out.float().cpu().numpy())
                           for name, out in zip(self.spec.output_names, outputs, strict=True))

    def deactivate_impl(self):
        pass


def check_component(model_set: ModelSet, onnx_dir: str | Path, component: str, engines: str | Path | None = None,
                    batch: int = 2, height: int | None = None, width: int | None = None, seed: int = 0,
                    atol: float | None = None, rtol: float | None = None) -> dict:
    """Compare ``component`` of ``model_set`` with its graph in ``onnx_dir`` (and its engine in ``engines``).

    Returns a report: shape, tolerances, ``passed``, and per runner and output the max absolute
    and relative difference against PyTorch. Raises ``ValueError`` for an unknown component or
    a shape the model cannot take, ``FileNotFoundError`` for a missing graph or engine and
    :class:`rfad.export.trt.TensorRTUnavailable` when ``engines`` is given without TensorRT or a GPU.
    """
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    from rfad.export.onnx_steps import component_graphs, load_models, quiet_export_logs, vocab_size_of
    from rfad.components.samples import check_side, pixel_multiple, sample_inputs
    from rfad.onnx_session import open_session

    quiet_export_logs()
    onnx_dir = Path(onnx_dir)
    manifest = ExportManifest.read(onnx_dir / "manifest.json", f"--onnx {onnx_dir}")
    if component not in manifest.specs:
        raise ValueError(f"--component {component!r}: not in {onnx_dir}; it has {', '.join(manifest.specs)}")
    graph_file = onnx_dir / manifest.files[component]["file"]
    if not graph_file.is_file():
        raise FileNotFoundError(f"--onnx {onnx_dir}: {manifest.files[component]['file']} is missing")
    spec, precision = manifest.specs[component], manifest.precision
    multiple = pixel_multiple(manifest.facts)
    height = height or check_side(manifest.facts)
    width = width or height
    if spec.spatial and (height % multiple or width % multiple):
        raise ValueError(f"--height/--width {height}x{width}: must be multiples of {multiple} for this model")
    tolerances = {"atol": CHECK_TOLERANCES[precision]["atol"] if atol is None else atol,
                  "rtol": CHECK_TOLERANCES[precision]["rtol"] if rtol is None else rtol}

    diffusion, judge = load_models(model_set)
    graphs = component_graphs(diffusion, judge)
    if component not in graphs:
        raise ValueError(f"--component {component!r}: the models in --models do not provide it (judge components "
                         "need --rfnet, --depth and --saliency)")
    feed = sample_inputs(spec, batch, height, width, seed=seed, vocab=vocab_size_of(spec, diffusion, judge))

    runners = [TorchModuleRunner(graphs[component], spec, name="pytorch"),
               OnnxrtRunner(lambda: open_session(graph_file, precision), name=f"onnxruntime-{precision}")]
    if engines is not None:
        runners.append(_engine_runner(Path(engines), component))
    results = Comparator.run(runners, data_loader=[feed])
    accuracy = Comparator.compare_accuracy(results, comparisons=[(0, i) for i in range(1, len(runners))],
                                           compare_func=SimpleCompareFunc(**tolerances))
    reference = results[runners[0].name][0]
    rows = []
    for runner in runners[1:]:
        outputs = results[runner.name][0]
        for name in spec.output_names:
            ref, got = reference[name], np.asarray(outputs[name], dtype=np.float32)
            diff = np.abs(got - ref)
            rows.append({"runner": runner.name, "output": name, "shape": list(ref.shape),
                         "max_abs_diff": float(diff.max()),
                         "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1e-6)).max())})
    return {"component": component, "batch": batch, "height": height, "width": width, "seed": seed,
            "precision": precision, **tolerances, "passed": bool(accuracy), "rows": rows}


def _engine_runner(engines: Path, component: str):
    """A polygraphy TensorRT runner over ``engines/<component>.plan`` (GPU and TensorRT only)."""
    from rfad.export.trt import check_tensorrt

    check_tensorrt()
    plan = engines / f"{component}.plan"
    if not plan.is_file():
        raise FileNotFoundError(f"--engines {engines}: {plan.name} is missing (build it with `rfad-export trt`)")
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(plan))), name="tensorrt")


def format_report(report: dict) -> str:
    lines = [f"{report['component']}: batch {report['batch']}, {report['height']}x{report['width']} px, seed "
             f"{report['seed']}, {report['precision']} graph; pass if |a - b| <= {report['atol']:g} + "
             f"{report['rtol']:g} * |pytorch|",
             f"{'runner':<20}{'output':<24}{'shape':<22}{'max abs diff':>14}{'max rel diff':>14}"]
    for row in report["rows"]:
        lines.append(f"{row['runner']:<20}{row['output']:<24}{str(tuple(row['shape'])):<22}"
                     f"{row['max_abs_diff']:>14.3e}{row['max_rel_diff']:>14.3e}")
    lines.append("PASSED" if report["passed"] else "FAILED: outputs differ beyond the tolerance")
    return "\n".join(lines)
