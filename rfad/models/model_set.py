"""A model set: where every model of a deployment lives, resolved from one path.

``--models DIR`` accepts either
- a folder with ``rfad-models.json`` (the tiny zoo writes one; users may write their own),
  mapping roles to paths relative to that folder, or
- a plain diffusers SD-1.5 folder (``model_index.json``), with the ControlNet taken from
  ``DIR/controlnet`` when present, or
- a single-file SD-1.5 checkpoint (``.safetensors``), which needs a diffusers config folder.

Command-line flags (``--controlnet`` etc.) override the roles of the set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rfad.models.folders import ModelFolderError

if TYPE_CHECKING:  # rfad.canvas needs OpenCV, an extra; the CLI imports this module without extras
    from rfad.canvas import CanvasSpec

MODEL_SET_FILE = "rfad-models.json"

ROLES = {
    "sd": "base SD-1.5 model (diffusers folder or single-file .safetensors)",
    "sd_config": "diffusers config folder for a single-file checkpoint",
    "controlnet": "ControlNet folder (diffusers)",
    "lora": "LoRA weights (.safetensors), fused at lora_scale",
    "depth": "depth model folder (transformers DPT)",
    "saliency": "saliency model (U2-Net folder or .pth/.safetensors)",
    "rfnet": "RFNet folder (rfad-train rfnet output)",
    "screen_rfnet": "RFNet folder that early screening judges x0-previews with (optional; default: the rfnet role's)",
    "roberta": "RoBERTa folder (RFNet's text backbone)",
    "resnet": "ResNet folder (RFNet's image backbone)",
}


@dataclass(frozen=True)
class ModelSet:
    """Absolute paths of the models of one deployment; ``None`` where a role is not provided."""

    sd: Path | None = None
    sd_config: Path | None = None
    controlnet: Path | None = None
    lora: Path | None = None
    lora_scale: float = 0.8  # the official pipeline's; the one home of this default (rfad-models.json may set another)
    depth: Path | None = None
    saliency: Path | None = None
    rfnet: Path | None = None
    screen_rfnet: Path | None = None
    roberta: Path | None = None
    resnet: Path | None = None
    # How the generator places products (rfad-models.json "canvas": rfad.canvas.DECLARED_CANVAS_KEYS);
    # None: the defaults of rfad.canvas.CanvasSpec. Export carries it to the served pipeline.
    canvas: CanvasSpec | None = None

    @classmethod
    def resolve(cls, path: str | os.PathLike) -> "ModelSet":
        """Resolve ``--models PATH`` (see the module docstring)."""
        root = Path(path)
        if not root.exists():
            raise ModelFolderError(f"models: {root} does not exist")
        if root.is_file():
            if root.suffix != ".safetensors":
                raise ModelFolderError(f"models: {root} is a file but not a .safetensors checkpoint")
            return cls(sd=root.resolve())
        manifest = root / MODEL_SET_FILE
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text())
            except json.JSONDecodeError as exc:
                raise ModelFolderError(f"models: {manifest} is not valid JSON ({exc})") from exc
            unknown = sorted(set(data) - set(ROLES) - {"lora_scale", "description", "canvas"})
            if unknown:
                raise ModelFolderError(f"models: {manifest} has unknown roles {unknown}; known: {sorted(ROLES)}")
            values = {k: (root / v).resolve() for k, v in data.items() if k in ROLES and v}
            try:
                canvas = None
                if "canvas" in data:
                    from rfad.canvas import canvas_from_dict

                    canvas = canvas_from_dict(data["canvas"], f"models: {manifest}: canvas")
            except ValueError as exc:
                raise ModelFolderError(str(exc)) from None
            return cls(**values, lora_scale=float(data.get("lora_scale", cls.lora_scale)), canvas=canvas)
        if (root / "model_index.json").is_file():
            controlnet = root / "controlnet"
            return cls(sd=root.resolve(), controlnet=controlnet.resolve() if controlnet.is_dir() else None)
        raise ModelFolderError(
            f"models: {root} is neither a model set (no {MODEL_SET_FILE}) nor a diffusers SD-1.5 folder "
            "(no model_index.json)"
        )

    def with_overrides(self, **paths) -> "ModelSet":
        """Replace roles with the values given (``None`` values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = set(paths) - known
        if unknown:
            raise ValueError(f"unknown model roles: {sorted(unknown)}")
        values = {k: (float(v) if k == "lora_scale" else v if k == "canvas" else Path(v).resolve())
                  for k, v in paths.items() if v is not None}
        return replace(self, **values)

    def require(self, role: str) -> Path:
        """The path of ``role``, or a clear error saying which flag provides it."""
        value = getattr(self, role)
        if value is None:
            flag = "--" + role.replace("_", "-")
            raise ModelFolderError(f"no {ROLES[role]} given: pass {flag} or add '{role}' to {MODEL_SET_FILE}")
        return value

    def write(self, root: str | os.PathLike, description: str = "") -> Path:
        """Write ``rfad-models.json`` into ``root`` with paths relative to it."""
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        data: dict[str, object] = {"description": description} if description else {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "lora_scale":
                data[f.name] = value
            elif f.name == "canvas":
                if value is not None:
                    from rfad.canvas import canvas_to_dict

                    data[f.name] = canvas_to_dict(value)
            elif value is not None:
                data[f.name] = os.path.relpath(value, root)
        path = root / MODEL_SET_FILE
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path
