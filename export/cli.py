"""``rfad-export``: ONNX graphs, TensorRT engines and the Triton model repository."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from rfad.deploy.profiles import DEFAULT_GPU_PROFILE, DEFAULT_PROFILE
from rfad.export.tolerances import check_tolerance_help
from rfad.models.options import MODEL_SET_FLAGS, model_set_options
from rfad.serving.pipeline_parameters import DEFAULT_JUDGE, JUDGE_MODES


@click.group()
def main() -> None:
    """Export rfad's components for serving."""
    from rfad.logs import quiet_third_party

    quiet_third_party()


@main.command()
@model_set_options(MODEL_SET_FLAGS + ("screen_rfnet",), required=("models",), help={
    "screen_rfnet": "RFNet folder that early screening judges x0-previews with: exported as screen_rfnet_text and "
                    "screen_rfnet [default: the model set's; none: the judge's RFNet screens]."})
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--components", help="Comma-separated subset (default: every component the models provide).")
@click.option("--unet", "served", type=click.Choice(["merged", "separate"]),
              help="Only the graphs a repository written with `triton-repo --unet` of this mode serves (merged: not "
                   "controlnet and unet) [default: every component].")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(14, 21))
@click.option("--fp16", is_flag=True, help="float16 weights and arithmetic (float32 inputs/outputs); for GPU serving.")
@click.option("--memory-check/--no-memory-check", default=True, show_default=True,
              help="Refuse, before starting, an export whose estimated peak memory exceeds MemAvailable.")
def onnx(models, sd_config, controlnet, lora, lora_scale, rfnet, depth, saliency, screen_rfnet, out, components, served,
         opset, fp16, memory_check) -> None:
    """Every component to ONNX, checked against PyTorch at two shapes (OUT/parity.json).

    Each component is traced and finished in processes of its own, so the export needs the
    memory of its largest component, not of all of them."""
    from rfad.export.onnx_export import ExportError, export_onnx
    from rfad.models.folders import ModelFolderError
    from rfad.models.model_set import ModelSet

    try:
        model_set = ModelSet.resolve(models).with_overrides(sd_config=sd_config, controlnet=controlnet, lora=lora,
                                                            lora_scale=lora_scale, rfnet=rfnet, depth=depth,
                                                            saliency=saliency, screen_rfnet=screen_rfnet)
        export_onnx(model_set, out, components.split(",") if components else None, opset=opset, fp16=fp16,
                    echo=click.echo, memory_check=memory_check, served=served)
    except (ExportError, ModelFolderError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ONNX graphs, manifest.json and parity.json written to {out}")


@main.command()
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--engines", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--profile", "profile_name", default=DEFAULT_GPU_PROFILE, show_default=True,
              help="Deployment profile whose engines to build: edge (static 512 px, batch 1-2) or datacenter "
                   "(256-768 px, batch 1-16); docs/deploying.md.")
@click.option("--fp16/--fp32", default=None, help="Precision [default: the profile's].")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--max-batch", type=int, help="Largest batch of the engines [default: the profile's].")
def trt(onnx_dir, engines, profile_name, fp16, timing_cache, max_batch) -> None:
    """TensorRT engines (GPU only) of the profile's shapes, with profiles from the component specs."""
    from rfad.export.profile_flags import profile_with_flags
    from rfad.export.trt import TensorRTUnavailable, build_engines

    try:
        profile, _ = profile_with_flags(profile_name, {"--fp16": fp16, "--max-engine-batch": max_batch},
                                        shown={"--max-engine-batch": "--max-batch"})
        if profile.engines is None:
            raise ValueError(f"--profile {profile.name}: names no TensorRT engines (its backends: "
                             f"{', '.join(profile.backends)})")
        build_engines(onnx_dir, engines, fp16=profile.precision == "fp16", batch=profile.engines.batch,
                      image=profile.engines.image, timing_cache=timing_cache, echo=click.echo,
                      profile_name=profile.name, serving_tensorrt=profile.image.tensorrt if profile.image else None)
    except TensorRTUnavailable as exc:
        click.echo(f"rfad-export trt: {exc}", err=True)
        sys.exit(2)
    except (FileNotFoundError, ValueError) as exc:  # no manifest, one of another format, a bad profile or flag
        raise click.ClickException(str(exc)) from None


@main.command()
@model_set_options(required=("models",), help={
    "models": "Model set folder (rfad-models.json), diffusers SD-1.5 folder, or single-file .safetensors: the "
              "PyTorch reference (the models the graphs were exported from)."})
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--engines", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Also compare the TensorRT engine (GPU).")
@click.option("--component", required=True, help="Component to compare, e.g. unet, controlnet_unet, vae_decoder, rfnet.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--height", type=click.IntRange(8, 4096), help="Image height in pixels [default: the export check's].")
@click.option("--width", type=click.IntRange(8, 4096), help="Image width in pixels [default: --height].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random inputs.")
@click.option("--atol", type=float, help=check_tolerance_help("atol"))
@click.option("--rtol", type=float, help=check_tolerance_help("rtol"))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here.")
def check(models, sd_config, controlnet, lora, lora_scale, rfnet, depth, saliency, onnx_dir, engines, component, batch, height, width, seed, atol,
          rtol, json_out) -> None:
    """Compare one component: PyTorch vs its ONNX graph (and engine), polygraphy-style; exit 1 on a mismatch."""
    from rfad.export.check import check_component, format_report
    from rfad.export.trt import TensorRTUnavailable
    from rfad.models.folders import ModelFolderError
    from rfad.models.model_set import ModelSet

    try:
        model_set = ModelSet.resolve(models).with_overrides(sd_config=sd_config, controlnet=controlnet, lora=lora,
                                                            lora_scale=lora_scale, rfnet=rfnet, depth=depth,
                                                            saliency=saliency)
        report = check_component(model_set, onnx_dir, component, engines, batch, height, width, seed, atol, rtol)
    except TensorRTUnavailable as exc:
        click.echo(f"rfad-export check: {exc}", err=True)
        sys.exit(2)
    except (ModelFolderError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_report(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        sys.exit(1)


@main.command("triton-repo")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--engines", type=click.Path(exists=True, file_okay=False, path_type=Path), help="For --backend tensorrt.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True,
              help="Deployment profile: cpu (what rfad-serve runs here), edge or datacenter (docs/deploying.md). "
                   "The flags below refine it; one that contradicts it is an error.")
@click.option("--backend", type=click.Choice(["python", "onnxruntime", "tensorrt"]),
              help="Backend of the component models [default: the profile's].")
@click.option("--unet", "unet_mode", default="merged", show_default=True, type=click.Choice(["merged", "separate"]))
@click.option("--canvas-size", type=int, help="Canvas side in pixels of rfad_pipeline, a multiple of 8 [default: the canvas the models "
                   "declare (rfad-models.json), else the profile's].")
@click.option("--max-attempts-cap", type=int, help="The largest max_attempts a request may ask for [default: the profile's].")
@click.option("--max-batch", type=int,
              help="max_batch_size of the component models, at least the pipeline's largest batch [default: the profile's].")
@click.option("--pipeline-judge", default=None, type=click.Choice(JUDGE_MODES),
              help=f"How rfad_pipeline judges: one call to rfad_judge, BLS calls to depth/saliency/rfnet, or not "
                   f"at all [default: {DEFAULT_JUDGE} where the judge components were exported, none otherwise].")
@click.option("--pipeline-instances", type=click.IntRange(1, 64),
              help="rfad_pipeline instances: requests whose loops run at the same time [default: the profile's].")
@click.option("--dynamic-batching/--no-dynamic-batching", default=None,
              help="Triton's dynamic batcher on the component models [default: the profile's].")
@click.option("--image-tensorrt", metavar="VERSION",
              help="TensorRT version of the image that will serve --engines (they must have been built with it) "
                   "[default: the profile's image's, e.g. 10.5.0 for NGC 24.10; edge declares none].")
def triton_repo(onnx_dir, engines, out, profile, backend, unet_mode, canvas_size, max_attempts_cap, max_batch,
                pipeline_judge, pipeline_instances, dynamic_batching, image_tensorrt) -> None:
    """A Triton model repository of a deployment profile: component models, rfad_pipeline (BLS), rfad_judge."""
    from rfad.export.triton_repo import write_triton_repo

    try:
        write_triton_repo(onnx_dir, out, profile=profile, backend=backend, engines=engines, unet_mode=unet_mode,
                          max_batch_size=max_batch, canvas_size=canvas_size, max_attempts_cap=max_attempts_cap,
                          pipeline_judge=pipeline_judge, pipeline_instances=pipeline_instances,
                          dynamic_batching=dynamic_batching, image_tensorrt=image_tensorrt)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Triton repository of profile {profile} written to {out} (see {out / 'README.md'})")


from rfad.export.k8s_cli import k8s  # noqa: E402  (its own module: the Kubernetes writer)

main.add_command(k8s)

if __name__ == "__main__":
    main()
