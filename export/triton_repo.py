"""``rfad-export triton-repo``: a Triton model repository from an export folder and the templates.

One model per component (config from its spec; backend ``python`` = the onnx_component template
running onnxruntime, ``onnxruntime`` = Triton's onnxruntime backend, ``tensorrt`` =
``tensorrt_plan`` engines) plus ``rfad_pipeline`` (the BLS model) with its assets: the served
components' specs and facts (``components.json``) and the tokenizers. Versions live in numbered
folders; ``README.md`` says what is inside and how it was built.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from rfad.export.triton_config import ModelConfig, pipeline_config, render_config, spec_tensor
from rfad.export.triton_judge import JUDGE_COMPONENTS, PREPARE_MODEL, judge_configs

from rfad.components.manifest import ExportManifest
from rfad.components.specs import ComponentSpec
from rfad.contract import MAX_COMPONENT_BATCH
from rfad.serving.pipeline_parameters import DEFAULT_JUDGE, PipelineParameterError, PipelineParameters

TEMPLATES = Path(__file__).resolve().parent.parent / "triton_repo"
BACKENDS = ("python", "onnxruntime", "tensorrt")
PARAMETER_FLAGS = {"max_attempts_cap": "--max-attempts-cap", "canvas_size": "--canvas-size", "judge": "--pipeline-judge"}


def component_config(spec: ComponentSpec, backend: str, max_batch_size: int, kind: str,
                     parameters: dict | None = None, dynamic_batching: bool = True) -> ModelConfig:
    """A component's Triton config from its spec: batch axis to max_batch_size, other symbols to -1."""
    return ModelConfig(name=spec.name, inputs=tuple(spec_tensor(t) for t in spec.inputs),
                       outputs=tuple(spec_tensor(t) for t in spec.outputs), backend=backend,
                       max_batch_size=max_batch_size, dynamic_batching=dynamic_batching, instance_kind=kind,
                       parameters=dict(parameters or {}))


def write_triton_repo(onnx_dir: str | Path, out: str | Path, backend: str = "python", engines: str | Path | None = None,
                      unet_mode: str = "merged", max_batch_size: int = MAX_COMPONENT_BATCH,
                      max_attempts_cap: int = PipelineParameters.max_attempts_cap,
                      canvas_size: int = PipelineParameters.canvas_size, kind: str | None = None,
                      pipeline_judge: str | None = None,
                      dynamic_batching: bool = True, pipeline_instances: int = 1) -> Path:
    """Write the repository to ``out`` (replaced if it exists); returns its path.

    With the judge components (depth, saliency, rfnet_text, rfnet) the repository also holds
    the ``rfad_judge`` ensemble and its two python steps; ``pipeline_judge`` says how
    ``rfad_pipeline`` judges its candidates: ``components`` (three BLS calls per attempt, the
    caption encoded once per request), ``ensemble`` (one BLS call to ``rfad_judge``) or ``none``;
    by default :data:`rfad.serving.pipeline_parameters.DEFAULT_JUDGE` where the judge components
    are there, ``none`` otherwise (modes and checks: :mod:`rfad.serving.pipeline_parameters`).
    ``dynamic_batching``: Triton's dynamic batcher on the component models (requests of
    concurrent pipeline instances merged into one batch); ``pipeline_instances``: instances of
    ``rfad_pipeline``, i.e. requests whose loops run at the same time.
    """
    if pipeline_instances < 1:
        raise ValueError(f"--pipeline-instances {pipeline_instances}: must be at least 1")
    # Checked before anything is written: a bad cap, size or judge mode names its flag here
    # rather than failing the server's start later.
    try:
        pipeline_parameters = PipelineParameters(max_attempts_cap=max_attempts_cap, canvas_size=canvas_size,
                                                 judge=pipeline_judge or DEFAULT_JUDGE)
    except PipelineParameterError as exc:
        raise ValueError(f"{PARAMETER_FLAGS[exc.parameter]}: {exc.detail}") from None
    if backend not in BACKENDS:
        raise ValueError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if unet_mode not in ("merged", "separate"):
        raise ValueError(f"--unet: {unet_mode!r} is not merged or separate")
    if max_batch_size < MAX_COMPONENT_BATCH:
        raise ValueError(f"--max-batch {max_batch_size}: the pipeline sends batches of up to {MAX_COMPONENT_BATCH} "
                         "(8 candidates, twice under guidance); component models must accept them")
    onnx_dir, out = Path(onnx_dir), Path(out)
    manifest = ExportManifest.read(onnx_dir / "manifest.json", f"--onnx {onnx_dir}")
    if backend == "tensorrt" and engines is None:
        raise ValueError("--backend tensorrt needs --engines DIR (from `rfad-export trt`)")
    kind = kind or ("KIND_GPU" if backend == "tensorrt" else "KIND_CPU")
    skip = {"controlnet", "unet"} if unet_mode == "merged" else {"controlnet_unet"}
    specs = {name: spec for name, spec in manifest.specs.items() if name not in skip}
    components = list(specs)
    required = {"text_encoder", "vae_encoder", "vae_decoder"} | ({"controlnet_unet"} if unet_mode == "merged"
                                                                  else {"controlnet", "unet"})
    missing = sorted(required - set(components))
    if missing:
        raise ValueError(f"--onnx {onnx_dir}: components {missing} are missing for --unet {unet_mode}")
    if out.exists():
        shutil.rmtree(out)
    for name, spec in specs.items():
        version = out / name / "1"
        version.mkdir(parents=True)
        # The python backend opens the graph through rfad.onnx_session, which needs its precision.
        parameters = {"precision": manifest.precision} if backend == "python" else None
        config = component_config(spec, backend, max_batch_size, kind, parameters, dynamic_batching)
        (out / name / "config.pbtxt").write_text(render_config(config))
        if backend == "tensorrt":
            plan = Path(engines) / f"{name}.plan"
            if not plan.is_file():
                raise FileNotFoundError(f"--engines {engines}: {plan.name} is missing")
            shutil.copy2(plan, version / "model.plan")
            continue
        for file in (onnx_dir / name).iterdir():  # model.onnx (+ external data)
            _place(file, version / file.name)
        if backend == "python":
            shutil.copy2(TEMPLATES / "onnx_component" / "1" / "model.py", version / "model.py")
    judge_models = []
    if all(name in specs for name in JUDGE_COMPONENTS):
        for name, config in judge_configs(specs).items():
            (out / name / "1").mkdir(parents=True)
            (out / name / "config.pbtxt").write_text(render_config(config))
            if config.backend == "python":
                shutil.copy2(TEMPLATES / name / "1" / "model.py", out / name / "1" / "model.py")
            judge_models.append(name)
        shutil.copytree(onnx_dir / "caption_tokenizer", out / PREPARE_MODEL / "1" / "assets" / "caption_tokenizer")
    elif pipeline_judge not in (None, "none"):
        raise ValueError(f"--pipeline-judge {pipeline_judge} needs the judge components "
                         "(export with --rfnet, --depth, --saliency)")
    if not judge_models:
        pipeline_parameters = replace(pipeline_parameters, judge="none")
    pipeline = out / "rfad_pipeline" / "1"
    assets = pipeline / "assets"
    assets.mkdir(parents=True)
    shutil.copy2(TEMPLATES / "rfad_pipeline" / "1" / "model.py", pipeline / "model.py")
    for tokenizer in ("tokenizer", "caption_tokenizer"):
        if (onnx_dir / tokenizer).is_dir():
            shutil.copytree(onnx_dir / tokenizer, assets / tokenizer)
    # The pipeline's runner builds every BLS call from the specs of the served components.
    replace(manifest, specs=specs, files={}, models={}).write(assets / "components.json")
    (out / "rfad_pipeline" / "config.pbtxt").write_text(render_config(pipeline_config(
        pipeline_parameters, instance_count=pipeline_instances)))
    _write_readme(out, onnx_dir, backend, unet_mode, components + judge_models, manifest, max_batch_size,
                  pipeline_parameters.judge)
    return out


def _place(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` where both are on one file system (GBs of graph
    weights then cost neither time nor disk), else a copy. Served files are only read."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_readme(out: Path, onnx_dir: Path, backend: str, unet_mode: str, models: list[str], manifest: ExportManifest,
                  max_batch_size: int, pipeline_judge: str):
    from rfad import __version__

    lines = [
        "# rfad Triton model repository", "",
        f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by rfad {__version__} (`rfad-export triton-repo`) "
        f"from `{onnx_dir}`; Python {sys.version.split()[0]}.", "",
        f"- backend of the component models: `{backend}`; ControlNet + UNet: `{unet_mode}`",
        f"- ONNX opset {manifest.opset}, precision {manifest.precision}, "
        f"component max_batch_size {max_batch_size}", "",
        "| model | what it does |", "|---|---|",
        "| `rfad_pipeline` | python BLS: the regenerate-until-available loop (request contract in its config) |",
    ]
    described = {name: spec.description for name, spec in manifest.specs.items()}
    described.update({"rfad_judge": "ensemble: RFNet's verdict on given images (judge contract in its config)",
                      "rfad_judge_prepare": "python: decodes and checks the judge request, places the product",
                      "rfad_judge_verdict": "python: p(Available) >= threshold"})
    lines += [f"| `{name}` | {described.get(name, '')} |" for name in models]
    lines += ["", f"rfad_pipeline judges its candidates through: `{pipeline_judge}`."]
    lines += ["", "Serve it locally with `rfad-serve --repo " + str(out) + "`."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
