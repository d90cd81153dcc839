"""The written form of a deployment's components: an export folder's ``manifest.json`` and the
``components.json`` a Triton repository's pipeline model reads, in one format.

Both hold the model facts, the spec of every component (names, dtypes, shapes, as
:meth:`ComponentSpec.to_dict` writes them) and the loop's constants (scheduler config, VAE
scale); an export manifest also lists the graph files and how they were made. Every reader
(the runners, ``rfad-export trt|check|triton-repo``, the benchmarks) goes through
:meth:`ExportManifest.read`, so one written by another format is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from rfad.components.specs import ComponentSpec, ModelFacts

# 1 (no "format" key): specs inside each component entry, runner.json beside; 2: judge
# components with free image sizes; 3: judge components at facts.judge_size.
MANIFEST_FORMAT = 3


@dataclass(frozen=True)
class ExportManifest:
    facts: ModelFacts
    specs: dict[str, ComponentSpec]
    scheduler_config: dict
    vae_scale_factor: int
    precision: str  # "fp32" or "fp16": how the graphs were written, never assumed
    opset: int | None = None
    files: dict[str, dict] = field(default_factory=dict)  # component -> {"file", "external_data", "bytes"}
    models: dict[str, str] = field(default_factory=dict)  # the model folders that were exported
    # The canvas the model set declares (rfad.canvas.DECLARED_CANVAS_KEYS), empty where it declares
    # none: the served pipeline and the judge endpoint place products by it.
    canvas: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": MANIFEST_FORMAT, "facts": self.facts.to_dict(),
                "components": {name: spec.to_dict() for name, spec in self.specs.items()},
                "scheduler_config": self.scheduler_config, "vae_scale_factor": self.vae_scale_factor,
                "precision": self.precision, "opset": self.opset, "files": self.files, "models": self.models,
                "canvas": self.canvas}

    @classmethod
    def from_dict(cls, values: dict) -> "ExportManifest":
        return cls(facts=ModelFacts.from_dict(values["facts"]),
                   specs={name: ComponentSpec.from_dict(spec) for name, spec in values["components"].items()},
                   **{k: values[k] for k in ("scheduler_config", "vae_scale_factor", "precision", "opset", "files",
                                             "models")}, canvas=values.get("canvas") or {})

    def canvas_spec(self, size: int | None = None):
        """The :class:`rfad.canvas.CanvasSpec` of the declared canvas (CanvasSpec's defaults where
        none is declared), ``size`` x ``size`` when given."""
        from rfad.canvas import canvas_from_dict

        declared = dict(self.canvas)
        if size is not None:
            declared.update(width=size, height=size)
        return canvas_from_dict(declared, "canvas")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path, where: str, writer: str = "rfad-export onnx") -> "ExportManifest":
        """The manifest at ``path``; ``where`` starts each error (e.g. ``--onnx DIR``), ``writer`` is the
        command that writes it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no {path.name} (write it with `{writer}`)")
        values = json.loads(path.read_text())
        found = values.get("format", 1)
        if found != MANIFEST_FORMAT:
            raise ValueError(f"{where}: {path.name} has format {found}, this rfad reads format {MANIFEST_FORMAT}: "
                             f"re-export with `{writer}`")
        return cls.from_dict(values)


EXPORT_HASH_LENGTH = 16  # hex digits: 64 bits, no collision between the exports of one fleet


def export_hash(onnx_dir: str | Path) -> str:
    """The content hash of an export: SHA-256 of its ``manifest.json`` (every graph's file, size
    and how it was made, timing included), so each export run has its own. A fleet's model
    repositories live under it (``rfad-export k8s``: REPO_URI/<hash>/<gpu>), so a new export is
    a new prefix and a rollout, never files changing under running pods."""
    path = Path(onnx_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"--onnx {onnx_dir}: no manifest.json (write it with `rfad-export onnx`)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:EXPORT_HASH_LENGTH]
