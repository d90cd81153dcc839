"""The onnxruntime runner: the exported graphs, in process (parity checks, benchmarks, CPU serving).

Reads an ``rfad-export onnx`` folder: ``manifest.json`` (facts, specs, scheduler), the
tokenizers and one graph per component. Calls are built from the specs in the manifest
(:class:`rfad.pipeline.spec_runner.SpecRunner`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rfad.components.manifest import ExportManifest
from rfad.onnx_session import open_session
from rfad.pipeline.spec_runner import SpecRunner, as_numpy


class OnnxRunner(SpecRunner):
    """``merged=True`` uses the ``controlnet_unet`` graph for each step (one call instead of two)."""

    def __init__(self, onnx_dir: str | Path, merged: bool = False, providers: list[str] | None = None):
        import onnxruntime

        folder = Path(onnx_dir)
        manifest = ExportManifest.read(folder / "manifest.json", f"ONNX folder {folder}")
        onnxruntime.set_default_logger_severity(3)
        self.facts, self.precision = manifest.facts, manifest.precision
        self.sessions = {}
        for name, entry in manifest.files.items():
            graph = folder / entry["file"]
            if not graph.is_file():
                raise FileNotFoundError(f"ONNX folder {folder}: {entry['file']} is missing")
            try:
                self.sessions[name] = open_session(graph, self.precision, providers, component=name)
            except Exception as exc:  # onnxruntime raises its own types for corrupt files
                raise ValueError(f"ONNX folder {folder}: {entry['file']} cannot be loaded: {exc}") from exc
        self._load(folder, manifest, merged)

    def _execute(self, spec, feed):
        outputs = self.sessions[spec.name].run(spec.output_names,
                                               {tensor.name: as_numpy(value, tensor.dtype) for tensor, value in feed})
        return [torch.from_numpy(out) for out in outputs]
