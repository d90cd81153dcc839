"""``rfad-export triton-repo``: a Triton model repository from an export folder and the templates.

One model per component (config from its spec; backend ``python`` = the onnx_component template
running onnxruntime, ``onnxruntime`` = Triton's onnxruntime backend, ``tensorrt`` =
``tensorrt_plan`` engines) plus ``rfad_pipeline`` (the BLS model) with its assets: the served
components' specs and facts (``components.json``) and the tokenizers. Versions live in numbered
folders; ``README.md`` says what is inside and how it was built.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

from rfad.export.triton_config import ModelConfig, pipeline_config, render_config, spec_tensor
from rfad.export.triton_config_check import check_repository
from rfad.export.triton_judge import JUDGE_COMPONENTS, PREPARE_MODEL, judge_configs
from rfad.serving.judge_io import CANVAS_FILE

from rfad.components.manifest import ExportManifest, export_hash
from rfad.components.registry import served_components
from rfad.components.specs import ComponentSpec
from rfad.deploy.images import check_engine_tensorrt
from rfad.deploy.memory import shm_need
from rfad.deploy.profiles import DEFAULT_PROFILE, MIB, ComponentServing, DeploymentProfile, get_profile
from rfad.export.profile_flags import profile_with_flags
from rfad.onnx_session import COMPONENT_THREADS
from rfad.serving.pipeline_parameters import DEFAULT_JUDGE, PipelineParameterError, PipelineParameters
from rfad.triton_repo import TEMPLATES

BACKENDS = ("python", "onnxruntime", "tensorrt")
DEPLOYMENT_FILE = "deployment.json"  # at the repository's root: the profile it was written for
PARAMETER_FLAGS = {"max_attempts_cap": "--max-attempts-cap", "canvas_size": "--canvas-size", "judge": "--pipeline-judge"}


def component_config(spec: ComponentSpec, backend: str, serving: ComponentServing,
                     parameters: dict | None = None) -> ModelConfig:
    """A component's Triton config from its spec (batch axis to max_batch_size, other symbols to
    -1) and how the deployment profile serves it (instances, dynamic batcher)."""
    batching = serving.batching
    return ModelConfig(name=spec.name, inputs=tuple(spec_tensor(t) for t in spec.inputs),
                       outputs=tuple(spec_tensor(t) for t in spec.outputs), backend=backend,
                       max_batch_size=serving.max_batch_size, dynamic_batching=batching is not None,
                       max_queue_delay_us=batching.max_queue_delay_us if batching else 0,
                       preferred_batch_sizes=batching.preferred_batch_sizes if batching else (),
                       instance_kind=serving.kind, instance_count=serving.count, parameters=dict(parameters or {}))


def write_triton_repo(onnx_dir: str | Path, out: str | Path, profile: str | DeploymentProfile = DEFAULT_PROFILE,
                      backend: str | None = None,
                      engines: str | Path | None = None, unet_mode: str = "merged", max_batch_size: int | None = None,
                      max_attempts_cap: int | None = None, canvas_size: int | None = None,
                      pipeline_judge: str | None = None, dynamic_batching: bool | None = None,
                      pipeline_instances: int | None = None, image_tensorrt: str | None = None) -> Path:
    """Write the repository of deployment ``profile`` (:mod:`rfad.deploy.profiles`) to ``out``
    (replaced if it exists); returns its path.

    The profile fixes the component backend, every model's instances, batch size and dynamic
    batcher, rfad_pipeline's instances, caps and default steps; the other arguments are the
    command's flags, which refine it (None: the profile's value; one that breaks the profile's
    rules is a ValueError naming flag and rule). ``deployment.json`` records the profile, the
    flags that changed it and every setting it was written with.

    With the judge components (depth, saliency, rfnet_text, rfnet) the repository also holds
    the ``rfad_judge`` ensemble and its two python steps; ``pipeline_judge`` says how
    ``rfad_pipeline`` judges its candidates: ``components`` (three BLS calls per attempt, the
    caption encoded once per request), ``ensemble`` (one BLS call to ``rfad_judge``) or ``none``;
    by default :data:`rfad.serving.pipeline_parameters.DEFAULT_JUDGE` where the judge components
    are there, ``none`` otherwise (modes and checks: :mod:`rfad.serving.pipeline_parameters`).

    TensorRT engines must have been built with the TensorRT of the image the profile is served
    with (:mod:`rfad.deploy.images`); ``image_tensorrt`` names it where the profile's image
    declares none, or for another image.
    """
    if pipeline_instances is not None and pipeline_instances < 1:
        raise ValueError(f"--pipeline-instances {pipeline_instances}: must be at least 1")
    declared = profile if isinstance(profile, DeploymentProfile) else get_profile(profile)
    onnx_dir, out = Path(onnx_dir), Path(out)
    manifest = ExportManifest.read(onnx_dir / "manifest.json", f"--onnx {onnx_dir}")
    if "width" in manifest.canvas:
        # The models' own canvas (what the generator was trained at) replaces the profile's;
        # --canvas-size still overrides both.
        declared = replace(declared, pipeline=replace(declared.pipeline, canvas_size=manifest.canvas["width"]))
    # Checked before anything is written: a bad cap, size or judge mode names its flag here
    # rather than failing the server's start later.
    try:
        pipeline_parameters = PipelineParameters(
            max_attempts_cap=declared.pipeline.max_attempts_cap if max_attempts_cap is None else max_attempts_cap,
            canvas_size=declared.pipeline.canvas_size if canvas_size is None else canvas_size,
            judge=pipeline_judge or DEFAULT_JUDGE, default_steps=declared.pipeline.default_steps,
            candidates_cap=declared.pipeline.candidates_cap)
    except PipelineParameterError as exc:
        raise ValueError(f"{PARAMETER_FLAGS[exc.parameter]}: {exc.detail}") from None
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    components = served_components(manifest.specs, unet_mode)  # an unknown --unet is a ValueError naming it
    chosen, flags = profile_with_flags(declared, {
        "--backend": backend, "--max-batch": max_batch_size, "--max-attempts-cap": max_attempts_cap,
        "--canvas-size": canvas_size, "--pipeline-instances": pipeline_instances,
        "--no-dynamic-batching": None if dynamic_batching is None else not dynamic_batching})
    backend = chosen.backend
    if backend == "tensorrt" and engines is None:
        raise ValueError("--backend tensorrt needs --engines DIR (from `rfad-export trt`)")
    engines_record = _check_precision(chosen, backend, manifest, onnx_dir, engines, image_tensorrt)
    specs = {name: manifest.specs[name] for name in components}
    required = {"text_encoder", "vae_encoder", "vae_decoder"} | ({"controlnet_unet"} if unet_mode == "merged"
                                                                  else {"controlnet", "unet"})
    missing = sorted(required - set(components))
    if missing:
        raise ValueError(f"--onnx {onnx_dir}: components {missing} are missing for --unet {unet_mode}")
    need = shm_need(chosen, backend, unet_mode, manifest.facts).total
    if chosen.shm.dev_shm_bytes is not None and need > chosen.shm.dev_shm_bytes:
        raise ValueError(f"--unet {unet_mode} --backend {backend}: the python models may hold {need / MIB:.0f} MiB of "
                         f"/dev/shm at once with these models; profile {chosen.name} sizes "
                         f"{chosen.shm.dev_shm_bytes / MIB:.0f} MiB")
    if out.exists():
        shutil.rmtree(out)
    for name, spec in specs.items():
        version = out / name / "1"
        version.mkdir(parents=True)
        serving = chosen.component(name)
        parameters = None
        if backend == "python":
            # The graph opens through rfad.onnx_session, which needs its precision and is given
            # the component threads (chosen, not onnxruntime's defaults: rfad.onnx_session says why).
            parameters = {"precision": manifest.precision, **COMPONENT_THREADS.to_parameters()}
            if serving.kind == "KIND_GPU":  # the pipeline's GPU tensors arrive as they are (read by DLPack)
                parameters["FORCE_CPU_ONLY_INPUT_TENSORS"] = "no"
        config = component_config(spec, backend, serving, parameters)
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
        # The judge places I_o as the pipeline places products: the models' declared canvas.
        (out / PREPARE_MODEL / "1" / "assets" / CANVAS_FILE).write_text(json.dumps(manifest.canvas, indent=2) + "\n")
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
        pipeline_parameters, instance_count=chosen.pipeline.instances,
        instance_kind="KIND_GPU" if chosen.gpu else "KIND_CPU")))
    record = {"profile": chosen.name, "flags": flags, "settings": asdict(chosen), "backend": backend,
              "precision": chosen.precision, "export_hash": export_hash(onnx_dir), **engines_record,
              "unet": unet_mode, "judge": pipeline_parameters.judge, "declared_canvas": manifest.canvas,
              "server_args": [f"--backend-config=python,shm-default-byte-size={chosen.shm.default_byte_size}",
                              f"--backend-config=python,shm-growth-byte-size={chosen.shm.growth_byte_size}"],
              "dev_shm_bytes": chosen.shm.dev_shm_bytes, "dev_shm_need_bytes": need}
    (out / DEPLOYMENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    _write_readme(out, onnx_dir, backend, unet_mode, components + judge_models, manifest, chosen, flags,
                  pipeline_parameters.judge)
    check_repository(out)  # every config as Triton's own ModelConfig: a wrong field fails here, not at deploy
    return out


def _place(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` where both are on one file system (GBs of graph
    weights then cost neither time nor disk), else a copy. Served files are only read."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _check_precision(profile: DeploymentProfile, backend: str, manifest: ExportManifest, onnx_dir: Path,
                     engines: str | Path | None, image_tensorrt: str | None) -> dict:
    """The graphs (or engines) must be of the profile's precision, and engines must take every
    batch Triton may form and the canvas, and be of the serving image's TensorRT; returns what
    deployment.json records of the engines (nothing without them)."""
    if backend != "tensorrt":
        if manifest.precision != profile.precision:
            raise ValueError(f"--onnx {onnx_dir}: an {manifest.precision} export, but profile {profile.name} serves "
                             f"{profile.precision} (export {'with' if profile.precision == 'fp16' else 'without'} "
                             "--fp16)")
        return {}
    record_file = Path(engines) / "engines.json"
    engines_json = json.loads(record_file.read_text()) if record_file.is_file() else {}
    built = engines_json.get("deployment_profile")
    if built is None:
        raise ValueError(f"--engines {engines}: no engines.json recording what they were built for "
                         f"(rfad-export trt --profile {profile.name})")
    largest = max(serving.max_batch_size for serving in profile.servings())
    canvas = profile.pipeline.canvas_size
    problems = [f"precision {built['precision']}, not {profile.precision}"] if built["precision"] != profile.precision else []
    if built["batch"][2] < largest:
        problems.append(f"largest batch {built['batch'][2]} < max_batch_size {largest}")
    if not built["image"][0] <= canvas <= built["image"][2]:
        problems.append(f"image sides {built['image'][0]}-{built['image'][2]} px exclude the canvas {canvas} px")
    if problems:
        raise ValueError(f"--engines {engines}: built for profile {built.get('name')}: {'; '.join(problems)} "
                         f"(rfad-export trt --profile {profile.name})")
    tensorrt = check_engine_tensorrt(engines_json.get("tensorrt"), profile.image, image_tensorrt, f"--engines {engines}")
    return {"tensorrt": tensorrt, "engines_gpu": engines_json.get("gpu")}


def _write_readme(out: Path, onnx_dir: Path, backend: str, unet_mode: str, models: list[str], manifest: ExportManifest,
                  profile: DeploymentProfile, flags: dict, pipeline_judge: str):
    from rfad import __version__

    lines = [
        "# rfad Triton model repository", "",
        f"Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by rfad {__version__} (`rfad-export triton-repo`) "
        f"from `{onnx_dir}`; Python {sys.version.split()[0]}.", "",
        f"- deployment profile `{profile.name}`" + (f" with {', '.join(f'{k} {v}' for k, v in flags.items())}"
                                                     if flags else "") + f" ({DEPLOYMENT_FILE}; docs/deploying.md)",
        f"- backend of the component models: `{backend}`; ControlNet + UNet: `{unet_mode}`",
        f"- ONNX opset {manifest.opset}, precision {manifest.precision}, "
        f"component max_batch_size {profile.components.max_batch_size}", "",
        "| model | what it does |", "|---|---|",
        "| `rfad_pipeline` | python BLS: the regenerate-until-available loop (request contract in its config) |",
    ]
    described = {name: spec.description for name, spec in manifest.specs.items()}
    described.update({"rfad_judge": "ensemble: RFNet's verdict on given images (judge contract in its config)",
                      "rfad_judge_prepare": "python: decodes and checks the judge request, places the product",
                      "rfad_judge_verdict": "python: p(Available) >= threshold"})
    lines += [f"| `{name}` | {described.get(name, '')} |" for name in models]
    lines += ["", f"rfad_pipeline judges its candidates through: `{pipeline_judge}`."]
    lines += ["", "Serve it locally with `rfad-serve --repo " + str(out) + "` (which passes the profile's "
              "python-backend shared-memory flags from " + DEPLOYMENT_FILE + ")."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
