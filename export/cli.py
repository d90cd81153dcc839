"""``rfad-export``: ONNX graphs, TensorRT engines and the Triton model repository."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def main() -> None:
    """Export rfad's components for serving."""
    from rfad.logs import quiet_third_party

    quiet_third_party()


@main.command()
@click.option("--models", required=True, type=click.Path(exists=True, path_type=Path), help="Model set or SD-1.5 folder.")
@click.option("--controlnet", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rfnet", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--depth", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--saliency", type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--components", help="Comma-separated subset (default: every component the models provide).")
@click.option("--opset", default=17, show_default=True, type=int)
def onnx(models, controlnet, rfnet, depth, saliency, out, components, opset) -> None:
    """Every component to ONNX, checked against PyTorch at two shapes (OUT/parity.json)."""
    from rfad.export.onnx_export import ExportError, export_onnx
    from rfad.models.folders import ModelFolderError
    from rfad.models.model_set import ModelSet

    try:
        model_set = ModelSet.resolve(models).with_overrides(controlnet=controlnet, rfnet=rfnet, depth=depth,
                                                            saliency=saliency)
        export_onnx(model_set, out, components.split(",") if components else None, opset=opset, echo=click.echo)
    except (ExportError, ModelFolderError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ONNX graphs, manifest.json and parity.json written to {out}")


@main.command()
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--engines", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--fp16", is_flag=True)
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--max-batch", default=8, show_default=True, type=int)
def trt(onnx_dir, engines, fp16, timing_cache, max_batch) -> None:
    """TensorRT engines (GPU only) with profiles from the component specs."""
    from rfad.export.trt import TensorRTUnavailable, build_engines

    try:
        build_engines(onnx_dir, engines, fp16=fp16, batch=(1, 2, max_batch), timing_cache=timing_cache, echo=click.echo)
    except TensorRTUnavailable as exc:
        click.echo(f"rfad-export trt: {exc}", err=True)
        sys.exit(2)


@main.command("triton-repo")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--engines", type=click.Path(exists=True, file_okay=False, path_type=Path), help="For --backend tensorrt.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--backend", default="python", show_default=True, type=click.Choice(["python", "onnxruntime", "tensorrt"]))
@click.option("--unet", "unet_mode", default="merged", show_default=True, type=click.Choice(["merged", "separate"]))
@click.option("--canvas-size", default=512, show_default=True, type=int)
@click.option("--max-attempts-cap", default=20, show_default=True, type=int)
def triton_repo(onnx_dir, engines, out, backend, unet_mode, canvas_size, max_attempts_cap) -> None:
    """A Triton model repository: component models + the rfad_pipeline BLS model."""
    from rfad.export.triton_repo import write_triton_repo

    try:
        write_triton_repo(onnx_dir, out, backend=backend, engines=engines, unet_mode=unet_mode,
                          canvas_size=canvas_size, max_attempts_cap=max_attempts_cap)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Triton repository written to {out} (see {out / 'README.md'})")


if __name__ == "__main__":
    main()
