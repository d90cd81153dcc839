"""``rfad-export trt``: TensorRT engines from the ONNX graphs, through polygraphy's Python API.

GPU only. Profiles come from the component specs (batch and image-size ranges); precision
fp32 or fp16; a timing cache makes rebuilds fast. Without TensorRT or a CUDA GPU the command
stops at once with a one-line reason (exit code 2).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from rfad.components.manifest import ExportManifest
from rfad.components.specs import ComponentSpec


class TensorRTUnavailable(RuntimeError):
    """No TensorRT Python package or no CUDA GPU on this machine."""


def check_tensorrt() -> None:
    if importlib.util.find_spec("tensorrt") is None:
        raise TensorRTUnavailable('TensorRT is not installed (pip install "rfad[trt]" on a machine with a CUDA GPU)')
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is visible: TensorRT engines are built on the GPU they will run on")


def engine_profiles(spec: ComponentSpec, batch: tuple[int, int, int],
                    image: tuple[int, int, int]) -> list[tuple[str, tuple, tuple, tuple]]:
    """(input, min, opt, max) for every input of ``spec`` (pure: testable without TensorRT)."""
    return [(name, *shapes) for name, shapes in spec.profile(batch, image).items()]


def deployment_record(profile_name: str | None, fp16: bool, batch, image) -> dict:
    """What ``engines.json`` says the engines were built for (read by ``rfad-export triton-repo``)."""
    return {"name": profile_name, "precision": "fp16" if fp16 else "fp32", "batch": list(batch), "image": list(image)}


def build_engines(onnx_dir: str | Path, engines: str | Path, *, batch: tuple[int, int, int],
                  image: tuple[int, int, int], fp16: bool = False, timing_cache: str | Path | None = None, echo=print,
                  profile_name: str | None = None, serving_tensorrt: str | None = None) -> dict:
    """One ``<component>.plan`` per graph in ``onnx_dir`` plus ``engines.json`` (shapes, precision,
    versions, and the deployment profile they were built for: ``rfad-export triton-repo``
    checks it against the repository's). ``batch`` and ``image``: (min, opt, max) of the engines'
    optimisation profile, a deployment profile's :class:`rfad.deploy.profiles.EngineShapes`.
    ``serving_tensorrt``: the TensorRT of the image that will serve them; another TensorRT here is
    refused before anything is built."""
    check_tensorrt()
    import tensorrt
    import torch

    from rfad.deploy.images import release_of

    if serving_tensorrt is not None and release_of(tensorrt.__version__) != release_of(serving_tensorrt):
        raise ValueError(f"this machine has TensorRT {tensorrt.__version__}, the serving image TensorRT "
                         f"{serving_tensorrt}: engines built here would not load there (build them in the image's "
                         "release: deploy/Dockerfile --target engines)")
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile, SaveEngine

    onnx_dir, engines = Path(onnx_dir), Path(engines)
    manifest = ExportManifest.read(onnx_dir / "manifest.json", f"--onnx {onnx_dir}")
    engines.mkdir(parents=True, exist_ok=True)
    record = {"tensorrt": tensorrt.__version__, "gpu": torch.cuda.get_device_name(0), "fp16": fp16,
              "deployment_profile": deployment_record(profile_name, fp16, batch, image),
              "engines": {}}
    for name, spec in manifest.specs.items():
        profile = Profile()
        shapes = engine_profiles(spec, batch, image)
        for input_name, low, opt, high in shapes:
            profile.add(input_name, min=low, opt=opt, max=high)
        config = CreateConfig(fp16=fp16, profiles=[profile], load_timing_cache=str(timing_cache) if timing_cache else None)
        build = EngineFromNetwork(NetworkFromOnnxPath(str(onnx_dir / manifest.files[name]["file"])), config=config,
                                  save_timing_cache=str(timing_cache) if timing_cache else None)
        SaveEngine(build, str(engines / f"{name}.plan"))()
        record["engines"][name] = {"file": f"{name}.plan", "profile": {n: [lo, op, hi] for n, lo, op, hi in shapes}}
        echo(f"{name}: engine written")
    (engines / "engines.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
