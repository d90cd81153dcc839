"""``rfad``: the umbrella command (``rfad tiny``, ``rfad generate``).

A thin front door: each command parses its flags, calls the library, and turns the library's
errors (bad image, missing model folder, out-of-range setting) into one-line messages with
exit code 1 instead of tracebacks. Nothing imports this module.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from rfad import __version__
from rfad.app.demo import DEMO_MAX_ATTEMPTS, DEMO_STEPS, FALLBACK_SIZE
from rfad.contract import DEFAULTS
from rfad.extras import needs_extras, require_extras
from rfad.models.options import MODEL_SET_FLAGS, model_option, model_set_options
from rfad.pipeline.settings import GenerationSettings


def _fail_cleanly(func):
    """Known user errors become ``click.ClickException`` (message, exit 1)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from rfad.canvas import CanvasError
        from rfad.contract import InvalidRequest
        from rfad.models.folders import ModelFolderError

        from rfad.logs import quiet_third_party

        quiet_third_party()
        try:
            return func(*args, **kwargs)
        except (CanvasError, InvalidRequest, ModelFolderError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="rfad")
def main() -> None:
    """rfad: reliable e-commerce advertising image generation (SD-1.5 + ControlNet + RFNet)."""


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the zoo to (created).")
@click.option("--seed", default=0, show_default=True, help="Same seed, same weights.")
@click.option("--shape", default="tiny", show_default=True, type=click.Choice(["tiny", "sd15"]),
              help="tiny: the test/demo models (seconds, MBs); sd15: the published SD-1.5/ControlNet/CLIP/DPT-Large/"
                   "U2-Net/RFNet sizes, a twin of production for rehearsing deployments (8.5 GB, about a minute).")
@needs_extras("generate")
@_fail_cleanly
def tiny(out: Path, seed: int, shape: str) -> None:
    """Build the random-weight model zoo (for tests, the demo and rehearsals; NOT for real images)."""
    from rfad.tiny.shapes import SHAPES
    from rfad.tiny.zoo import build_tiny_zoo, zoo_disk_need

    zoo_shape = SHAPES[shape]
    echo = None
    if shape != "tiny":
        needed, free = zoo_disk_need(zoo_shape, out)
        if free < needed:
            raise click.ClickException(f"--out {out}: the {shape} zoo needs about {needed / 1e9:.1f} GB of disk, "
                                       f"{free / 1e9:.1f} GB free there")
        click.echo(f"building the {shape} zoo: about {needed / 1e9:.1f} GB of fp32 weights, one model at a time")
        echo = click.echo
    start = time.perf_counter()
    model_set = build_tiny_zoo(out, seed=seed, shape=zoo_shape, echo=echo)
    click.echo(f"{shape} zoo (seed {seed}, random weights) written to {out} in {time.perf_counter() - start:.1f} s")
    for role in ("sd", "controlnet", "depth", "saliency", "rfnet", "roberta", "resnet"):
        path = getattr(model_set, role)
        if path is not None:
            click.echo(f"  {role:<11} {path}")


def _check_runner_flags(runner: str, models, onnx_dir: Path | None, device: str) -> None:
    """Refuse the flags ``runner`` cannot honour, naming them: nothing is silently ignored (and
    so nothing is recorded in the sidecar as used when it was not)."""
    context = click.get_current_context()
    given = [name for name in MODEL_SET_FLAGS + ("screen_rfnet",)
             if context.get_parameter_source(name) is not ParameterSource.DEFAULT]
    if runner == "torch":
        if onnx_dir is not None:
            raise click.ClickException("--onnx is read by --runner onnx only (add --runner onnx, or drop --onnx)")
        if models is None:
            raise click.ClickException("--runner torch needs --models (a model set, SD-1.5 folder or .safetensors)")
        return
    if onnx_dir is None:
        raise click.ClickException("--runner onnx needs --onnx DIR (an rfad-export onnx folder)")
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.ClickException(f"{flags}: --runner onnx runs the graphs exported into --onnx {onnx_dir}, which "
                                   "these flags cannot change (export other models with `rfad-export onnx`)")
    if device != "cpu":
        raise click.ClickException(f"--device {device}: --runner onnx runs on onnxruntime's CPU provider "
                                   "(--device is for --runner torch)")


def _onnx_provenance(onnx_dir: Path, runner) -> dict:
    """What ``--runner onnx`` ran, for the sidecar: the folder and its manifest's facts."""
    from rfad.components.manifest import ExportManifest

    manifest = ExportManifest.read(onnx_dir / "manifest.json", f"--onnx {onnx_dir}")
    return {"folder": str(onnx_dir.resolve()), "precision": manifest.precision, "opset": manifest.opset,
            "facts": manifest.facts.to_dict(), "models": manifest.models, "components": sorted(manifest.specs),
            "merged": runner.merged}


def _output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]


@main.command()
@model_set_options(MODEL_SET_FLAGS + ("screen_rfnet",), help={
    "models": "Model set folder (rfad-models.json), diffusers SD-1.5 folder, or single-file .safetensors "
              "(--runner torch).",
    "rfnet": "RFNet folder: judge every candidate and regenerate until Available [default: the model set's].",
    "screen_rfnet": "RFNet folder that judges the x0-previews of early screening [default: the model set's, else "
                    "the judge's RFNet].",
})
@click.option("--product", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Product cut-out (PNG/WebP with alpha).")
@click.option("--prompt", required=True, help="Background prompt.")
@click.option("--negative-prompt", default="", help="Negative prompt.")
@click.option("--caption", default="", help="Product title, read by RFNet.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output PNG; with --num-images N > 1, OUT-0.png .. OUT-(N-1).png. A JSON sidecar OUT.json is written.")
@click.option("--seed", default=GenerationSettings.seed, show_default=True, type=int,
              help="Seed of the first candidate; candidate i uses seed + i.")
@click.option("--steps", default=GenerationSettings.steps, show_default=True, type=int, help="DDIM steps.")
@click.option("--guidance", default=GenerationSettings.guidance_scale, show_default=True, type=float,
              help="Classifier-free guidance scale.")
@click.option("--controlnet-scale", default=GenerationSettings.controlnet_scale, show_default=True, type=float)
@click.option("--num-images", default=GenerationSettings.num_images, show_default=True, type=int)
@click.option("--candidates", default=GenerationSettings.candidates, show_default=True, type=int,
              help="Candidates per attempt (one batch).")
@click.option("--max-attempts", default=GenerationSettings.max_attempts, show_default=True, type=int,
              help="Attempts before returning the best candidates flagged not available (with a judge).")
@click.option("--threshold", default=GenerationSettings.threshold, show_default=True, type=float,
              help="p(Available) needed to pass.")
@click.option("--screen-at", type=float, default=None,
              help="Early screening: judge each candidate's x0-prediction after this share of the steps, in (0, 1), "
                   "and replace it by the next seed below --screen-threshold [default: off].")
@click.option("--screen-threshold", type=float, default=None,
              help="Early screening: p(Available) in [0, 1] below which a screened candidate is replaced "
                   "(required with --screen-at).")
@click.option("--size", default=None, type=int,
              help=f"Canvas side in pixels (multiple of 8) [default: the model set's canvas, else {DEFAULTS.canvas_size}].")
@click.option("--product-scale", default=None, type=float,
              help="Largest product side as a fraction of the canvas [default: the model set's canvas, "
                   f"else {DEFAULTS.product_scale}].")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda (--runner torch).")
@click.option("--runner", default="torch", show_default=True, type=click.Choice(["torch", "onnx"]),
              help="torch: the PyTorch models of --models; onnx: the graphs exported into --onnx, on onnxruntime's "
                   "CPU provider (same loop).")
@click.option("--onnx", "onnx_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="rfad-export onnx output folder, for --runner onnx.")
@needs_extras("generate")
@_fail_cleanly
def generate(models, sd_config, controlnet, lora, lora_scale, rfnet, depth, saliency, screen_rfnet, product, prompt,
             negative_prompt, caption, out, seed, steps, guidance, controlnet_scale, num_images, candidates, max_attempts,
             threshold, screen_at, screen_threshold, size, product_scale, device, runner, onnx_dir) -> None:
    """Generate ad images for a product cut-out, in process (PyTorch models, or their ONNX graphs).

    With an RFNet (in the model set or --rfnet, or exported into --onnx), every candidate is
    judged and the loop regenerates until --num-images are Available or --max-attempts are used
    (Recurrent Generation); without one, images are generated once and not judged. With
    --screen-at, candidates are judged early and the hopeless ones replaced (early screening).
    """
    if runner == "onnx":
        require_extras("rfad generate --runner onnx", "export")  # onnxruntime
    from tqdm import tqdm

    from rfad.canvas import CanvasSpec, canvas_to_dict, prepare_canvas
    from rfad.components.manifest import ExportManifest
    from rfad.contract import check_text
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.generate import generate as run_generation
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.torch_runner import TorchRunner

    _check_runner_flags(runner, models, onnx_dir, device)
    check_text("prompt", prompt, allow_empty=False)
    check_text("negative_prompt", negative_prompt)
    check_text("caption", caption)
    settings = GenerationSettings(steps=steps, guidance_scale=guidance, controlnet_scale=controlnet_scale, seed=seed,
                                  num_images=num_images, candidates=candidates, max_attempts=max_attempts,
                                  threshold=threshold, screen_at=screen_at, screen_threshold=screen_threshold)
    # The canvas the models declare (rfad-models.json "canvas", carried into the export manifest):
    # how the generator was trained to place products; --size and --product-scale override it.
    declared = (ExportManifest.read(onnx_dir / "manifest.json", f"--onnx {onnx_dir}").canvas_spec() if runner == "onnx"
                else ModelSet.resolve(models).canvas or CanvasSpec())
    try:
        spec = replace(declared, **{k: v for k, v in (("width", size), ("height", size),
                                                      ("product_scale", product_scale)) if v is not None})
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    canvas = prepare_canvas(product, spec)
    t0 = time.perf_counter()
    runner_name = runner
    if runner_name == "onnx":
        from rfad.pipeline.onnx_runner import OnnxRunner

        runner = OnnxRunner(onnx_dir, merged=(onnx_dir / "controlnet_unet").is_dir())
        judge = RunnerJudge(runner) if runner.info.caption_tokenizer is not None and "rfnet" in runner.sessions else None
        ran = {"onnx": _onnx_provenance(onnx_dir, runner)}
        screen_judge = RunnerJudge(runner, screen=True) if judge is not None and runner.info.screen_judge else None
    else:
        model_set = ModelSet.resolve(models).with_overrides(controlnet=controlnet, sd_config=sd_config, lora=lora,
                                                            lora_scale=lora_scale, rfnet=rfnet, depth=depth,
                                                            saliency=saliency, screen_rfnet=screen_rfnet)
        judge_models = load_judge_models(model_set, device) if model_set.rfnet is not None else None
        runner = TorchRunner(load_diffusion_models(model_set, device=device), device=device, judge=judge_models)
        judge = RunnerJudge(runner) if judge_models is not None else None
        screen_judge = RunnerJudge(runner, screen=True) if runner.info.screen_judge else None
        ran = {"models": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(model_set).items()
                          if v is not None and k != "canvas"},
               "device": device}
    load_s = time.perf_counter() - t0
    if judge is None:
        where = "the graphs in --onnx" if runner_name == "onnx" else "the model set or --rfnet"
        click.echo(f"no RFNet in {where}: images are generated once and not judged", err=True)
        if settings.screening:
            raise click.ClickException(f"--screen-at: early screening needs a judge, and there is no RFNet in {where}")

    with tqdm(total=1, unit="step", desc="denoising", file=sys.stderr) as bar:
        def on_step(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = run_generation(runner, canvas, prompt, settings, negative_prompt=negative_prompt, caption=caption,
                                judge=judge, on_step=on_step, screen_judge=screen_judge)

    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    paths = _output_paths(out, len(result.images))
    for path, candidate in zip(paths, result.images):
        Image.fromarray(candidate.image).save(path)
    sidecar = {
        "rfad_version": __version__,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "caption": caption,
        "judged": judge is not None,
        "runner": runner_name,
        "product": str(product),
        **ran,
        "settings": settings.to_dict(),
        "canvas": {**canvas_to_dict(spec), "box": list(canvas.box)},
        "outputs": [str(p) for p in paths],
        **result.to_dict(),
    }
    sidecar["timings_s"]["load_models"] = round(load_s, 4)
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    verdict = ""
    if judge is not None:
        passed = sum(bool(c.available) for c in result.images)
        verdict = f"; {passed}/{len(result.images)} Available after {result.attempts} attempt(s)"
        if settings.screening:
            verdict += f", {len(result.screened)} candidate(s) screened out"
    click.echo(f"wrote {', '.join(str(p) for p in paths)} and {out.with_suffix('.json')} "
               f"({result.timings['total']:.2f} s generation{verdict})")


@main.command()
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the ONNX graphs, repository, products, images and report go.")
@model_option("models", help="A model set of your own [default: the miniature world: the shipped generator and "
                             "the RFNet trained on RF-mini].")
@click.option("--tiny", is_flag=True, help="The tiny random-weight zoo instead (noise images; the fastest run).")
@click.option("--size", type=int, help=f"Canvas side in pixels [default: the models' declared canvas, else {FALLBACK_SIZE}].")
@click.option("--steps", default=DEMO_STEPS, show_default=True, type=int)
@click.option("--max-attempts", default=DEMO_MAX_ATTEMPTS, show_default=True, type=int)
@click.option("--threshold", default=GenerationSettings.threshold, show_default=True, type=float,
              help="p(Available) needed to pass.")
@click.option("--screen-at", type=float, default=None,
              help="Early screening after this share of the steps, in (0, 1); the report shows each replaced "
                   "candidate with its step and p [default: off].")
@click.option("--screen-threshold", type=float, default=None,
              help="Early screening: p(Available) below which a candidate is replaced (required with --screen-at).")
@needs_extras("export", "serve")
@_fail_cleanly
def demo(out, models, tiny, size, steps, max_attempts, threshold, screen_at, screen_threshold) -> None:
    """End to end: models -> ONNX -> Triton repository -> local Triton -> gRPC requests -> report.

    By default the miniature world: drawn products on painted tables, judged by an RFNet trained
    on RF-mini, each attempt shown with its verdict and the oracle's.
    """
    from rfad.contract import InvalidRequest, check_screening
    from rfad.app.demo import TINY_WITH_MODELS, DemoScreening, run_demo
    from rfad.serving.start_errors import ServerStartError

    if tiny and models is not None:  # run_demo refuses it too, for library callers; here it is a usage error
        raise click.UsageError(TINY_WITH_MODELS)
    try:
        check_screening(screen_at, screen_threshold, steps)
    except InvalidRequest as exc:
        raise click.UsageError(f"--{str(exc).replace('_', '-', 1)}") from None
    screening = None if screen_at is None else DemoScreening(screen_at, screen_threshold)
    try:
        run_demo(out, models, tiny=tiny, size=size, steps=steps, max_attempts=max_attempts, threshold=threshold,
                 echo=click.echo, screening=screening)
    except ServerStartError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
