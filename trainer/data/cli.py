"""``rfad-data``: the synthetic set, miniature-world scenes and RF-mini, the RF1M import, sample checks, the depth/saliency cache."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rfad.trainer.data.manifest import CLASS_NAMES, SPLITS, ManifestError, check_rows, read_manifest
from rfad.trainer.data.miniworld import MiniworldSettings
from rfad.trainer.data.rf1m import RF1MFormatError, import_rf1m
from rfad.trainer.data.synth import write_synthetic_dataset

# What a user can fix (a bad file, a wrong path, a bad value) is reported as a one-line message
# with exit code 1; anything else is a bug and keeps its traceback.
USER_ERRORS = (ManifestError, RF1MFormatError, FileNotFoundError, ValueError)


@click.group()
def main() -> None:
    """Datasets for rfad-train: manifests, the synthetic set, the RF1M importer."""


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Number of samples (balanced over the 5 classes).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=64), help="Ad image side in pixels.")
@click.option("--val-fraction", default=0.15, show_default=True, type=float)
@click.option("--test-fraction", default=0.15, show_default=True, type=float)
def synth(out_dir: Path, n: int, seed: int, size: int, val_fraction: float, test_fraction: float) -> None:
    """Write a synthetic dataset whose labels are learnable from the images."""
    try:
        manifest = write_synthetic_dataset(
            out_dir, n, seed=seed, size=size, val_fraction=val_fraction,
            test_fraction=test_fraction, progress=True,
        )
        rows = read_manifest(manifest)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {len(rows)} samples to {manifest}")
    _echo_counts("label", [row.label for row in rows], order=CLASS_NAMES)
    _echo_counts("split", [row.split for row in rows], order=SPLITS)


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Number of scenes (balanced over the 5 classes).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--through-vae", "through_vae", is_flag=True,
              help="Pass every scene through the generator's VAE (encode, decode, product pasted back) and label it "
                   "by the oracle: scenes that look generated.")
@click.option("--models", type=click.Path(exists=True, path_type=Path),
              help="With --through-vae: the generator model set [default: the shipped one].")
def scenes(out_dir: Path, n: int, seed: int, through_vae: bool, models: Path | None) -> None:
    """Write miniature-world scenes (128 px, product placed by the canvas, labels known by construction).

    With --through-vae the labels are the oracle's on the decoded scenes (scenes.jsonl keeps the class drawn).
    """
    from rfad.trainer.data.scenes import write_scene_dataset

    if models is not None and not through_vae:
        raise click.UsageError("--models is read only with --through-vae")
    try:
        runner = None
        if through_vae:
            from rfad.logs import quiet_third_party
            from rfad.trainer.data.miniworld import load_generator

            quiet_third_party()
            runner, _ = load_generator(models)
        rows = read_manifest(write_scene_dataset(out_dir, n, seed=seed, progress=True, through_vae=runner))
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {len(rows)} scenes to {out_dir} (manifest.jsonl, scenes.jsonl)")
    _echo_counts("label", [row.label for row in rows], order=CLASS_NAMES)


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the products, prompts, splits and images.")
@click.option("--models", type=click.Path(exists=True, path_type=Path),
              help="Generator model set [default: the shipped one, rfad.miniworld.model_dir()].")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1), help="DDIM steps.")
@click.option("--guidance", default=MiniworldSettings.guidance, show_default=True, type=float,
              help="Classifier-free guidance scale.")
@click.option("--images-per-product", default=4, show_default=True, type=click.IntRange(min=1),
              help="Candidates generated per product (one attempt, seeds in a row).")
@click.option("--available-share", default=0.4, show_default=True, type=click.FloatRange(0, 1),
              help="Class mix of the request prompts: share of Available scenes' prompts.")
@click.option("--val-fraction", default=0.15, show_default=True, type=float, help="Share of PRODUCTS in val.")
@click.option("--test-fraction", default=0.15, show_default=True, type=float, help="Share of PRODUCTS in test.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
@click.option("--shard", default="0/1", show_default=True, callback=lambda _c, _p, value: _parse_shard(value),
              help="I/N: generate every N-th product from I (run N processes on one --out to split the work).")
def miniworld(out_dir: Path, n: int, seed: int, models: Path | None, steps: int, guidance: float,
              images_per_product: int, available_share: float, val_fraction: float, test_fraction: float,
              device: str, shard: tuple[int, int]) -> None:
    """Write RF-mini: images from the miniature world's generator (the real loop, no judge), labelled by the oracle.

    Splits are by product; labels.jsonl holds the oracle's measurements, summary.json the class rates.
    Run again on the same --out to resume: finished products are kept. The call that finds every
    shard's products done writes manifest.jsonl, labels.jsonl and summary.json.
    """
    from rfad.logs import quiet_third_party
    from rfad.models.folders import ModelFolderError
    from rfad.trainer.data.miniworld import write_miniworld_dataset

    quiet_third_party()
    try:
        settings = MiniworldSettings(seed=seed, steps=steps, guidance=guidance, images_per_product=images_per_product,
                                     available_share=available_share, val_fraction=val_fraction,
                                     test_fraction=test_fraction)
        summary = write_miniworld_dataset(out_dir, n, settings, models=models, device=device, progress=True,
                                          shard=shard)
    except (*USER_ERRORS, ModelFolderError) as error:
        raise click.ClickException(str(error)) from None
    if not summary["complete"]:
        click.echo(f"shard {shard[0]}/{shard[1]} done: {summary['products_done']} of {summary['products']} products "
                   f"in {out_dir}; the manifest is written when every shard has finished (run them, or this "
                   "command again, on the same --out)")
        return
    click.echo(f"wrote {summary['images']} images of {summary['products']} products to {out_dir} "
               f"(manifest.jsonl, labels.jsonl, summary.json) in {summary['seconds']} s")
    _echo_counts("oracle label", [name for name, count in summary["labels"].items() for _ in range(count)],
                 order=CLASS_NAMES)
    click.echo("  split     images  products")
    for split, counts in summary["splits"].items():
        click.echo(f"  {split:<8}{counts['images']:>7}{counts['products']:>10}")


def _parse_shard(value: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), with 0 <= I < N."""
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected I/N (e.g. 0/2), got {value!r}", param_hint="--shard") from None
    if count < 1 or not 0 <= index < count:
        raise click.BadParameter(f"expected I/N with 0 <= I < N, got {value!r}", param_hint="--shard")
    return index, count


@main.command("relabel-miniworld")
@click.option("--data", "out_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An RF-mini folder (rfad-data miniworld output).")
@click.option("--redecode", "decoder_models", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="First decode every image's kept final latents again with this generator's VAE (same UNet and "
                   "ControlNet, another decoder: rfad-train decoder output).")
def relabel_miniworld_command(out_dir: Path, decoder_models: Path | None) -> None:
    """Label RF-mini's images again with the oracle as it is now (after a change of its rules), optionally
    decoded again by another decoder first; otherwise the images are unchanged."""
    from rfad.trainer.data.miniworld import load_generator, relabel_miniworld

    try:
        decoder = None
        if decoder_models is not None:
            from rfad.logs import quiet_third_party

            quiet_third_party()
            decoder, _ = load_generator(decoder_models)
        summary = relabel_miniworld(out_dir, progress=True, decoder=decoder)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{summary['relabelled']} labels changed in {out_dir}")
    if summary["complete"]:
        _echo_counts("oracle label", [name for name, count in summary["labels"].items() for _ in range(count)],
                     order=CLASS_NAMES)


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Number of previews (one per candidate).")
@click.option("--screen-at", required=True, type=float,
              help="Share of the steps at which the x0-previews are taken, in (0, 1) (the screening step).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seeds the products, prompts, splits and images, as rfad-data miniworld's --seed.")
@click.option("--models", type=click.Path(exists=True, path_type=Path),
              help="Model set with the generator and the judge that screens [default: the miniature world's, "
                   "rfad.miniworld.world_dir()].")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1), help="DDIM steps.")
@click.option("--guidance", default=MiniworldSettings.guidance, show_default=True, type=float,
              help="Classifier-free guidance scale.")
@click.option("--images-per-product", default=4, show_default=True, type=click.IntRange(min=1),
              help="Candidates generated per product (one attempt, seeds in a row).")
@click.option("--available-share", default=0.4, show_default=True, type=click.FloatRange(0, 1),
              help="Class mix of the request prompts: share of Available scenes' prompts.")
@click.option("--val-fraction", default=0.15, show_default=True, type=float, help="Share of PRODUCTS in val.")
@click.option("--test-fraction", default=0.15, show_default=True, type=float, help="Share of PRODUCTS in test.")
@click.option("--world-products", type=click.IntRange(min=1),
              help="Take the products and splits of this size of RF-mini (rfad-data miniworld --n N / images per "
                   "product; the screening bench's world: 300), leaving out its test products [default: a world of "
                   "just the products needed].")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
def previews(out_dir: Path, n: int, screen_at: float, seed: int, models: Path | None, steps: int, guidance: float,
             images_per_product: int, available_share: float, val_fraction: float, test_fraction: float,
             world_products: int | None, device: str) -> None:
    """Write x0-previews at the screening step, labelled by the oracle on each candidate's FINAL image.

    RF-mini's requests through the real loop with early screening at --screen-at and nothing
    screened out: each candidate's preview is a manifest row, so `rfad-train rfnet --init JUDGE
    --data OUT` fine-tunes a noise-aware screening judge (the model set's screen_rfnet).
    """
    from rfad.logs import quiet_third_party
    from rfad.miniworld import world_dir
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.folders import ModelFolderError
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.trainer.data.previews import PreviewSettings, write_preview_dataset

    quiet_third_party()
    try:
        settings = PreviewSettings(MiniworldSettings(seed=seed, steps=steps, guidance=guidance,
                                                     images_per_product=images_per_product,
                                                     available_share=available_share, val_fraction=val_fraction,
                                                     test_fraction=test_fraction), screen_at=screen_at,
                                   world_products=world_products)
        model_set = ModelSet.resolve(models if models is not None else world_dir())
        runner = TorchRunner(load_diffusion_models(model_set, device=device), device=device,
                             judge=load_judge_models(model_set, device))
        summary = write_preview_dataset(out_dir, n, runner, RunnerJudge(runner), settings, progress=True)
    except (*USER_ERRORS, ModelFolderError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {summary['images']} previews at step {summary['settings']['screen_step']} of {steps} of "
               f"{summary['products']} products to {out_dir} (manifest.jsonl, labels.jsonl, summary.json) in "
               f"{summary['seconds']} s")
    _echo_counts("final image's oracle label", [name for name, count in summary["labels"].items()
                                                for _ in range(count)], order=CLASS_NAMES)


@main.command("import-rf1m")
@click.option("--labels", "labels_txt", required=True, type=click.Path(path_type=Path), help="RF1M label.txt.")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path), help="Folder of generated images (searched recursively).")
@click.option("--products", "products_dir", required=True, type=click.Path(path_type=Path), help="Folder of RGBA product PNG/WebP files.")
@click.option("--out", "out_manifest", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Manifest to write (.jsonl or .parquet).")
@click.option("--keep-unsuitable", is_flag=True, help="Keep rows labelled Unsuitable (dropped by default).")
@click.option("--captions", type=click.Path(path_type=Path), default=None, help="name -> caption file (.jsonl or .tsv).")
@click.option("--json-report", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the report as JSON.")
def import_rf1m_command(
    labels_txt: Path, images_dir: Path, products_dir: Path, out_manifest: Path,
    keep_unsuitable: bool, captions: Path | None, json_report: Path | None,
) -> None:
    """Import RF1M (label.txt + images + products) into a manifest, reporting what was skipped."""
    try:
        report = import_rf1m(
            labels_txt, images_dir, products_dir, out_manifest,
            keep_unsuitable=keep_unsuitable, captions=captions, progress=True,
        )
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(report.format())
    if json_report is not None:
        json_report.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict-labels", is_flag=True, help="An unknown label is a manifest error, not a skipped row.")
def check(manifest: Path, strict_labels: bool) -> None:
    """Decode every sample of MANIFEST and report the rows a trainer would skip, by reason."""
    try:
        rows = read_manifest(manifest, strict_labels=strict_labels)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    _, report = check_rows(rows, manifest.parent, progress=True)
    click.echo(report.format(title=str(manifest)))


@main.command()
@click.option("--manifest", "manifest", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Input manifest (.jsonl or .parquet).")
@click.option("--depth", required=True, type=click.Path(path_type=Path), help="DPT folder (transformers DPTForDepthEstimation).")
@click.option("--saliency", required=True, type=click.Path(path_type=Path), help="U2-Net folder, or official u2net.pth / .safetensors file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder: depth/, saliency/, manifest.jsonl.")
@click.option("--shard", default=None, help="Only rows whose index % n == i, as i/n; writes manifest.shard-i-of-n.jsonl.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Spawn N processes (shards 0/N..N-1/N) and merge their manifests.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:K (--workers spreads over all GPUs).")
def prepare(manifest: Path, depth: Path, saliency: Path, out_dir: Path, shard: str | None, workers: int,
            batch_size: int, device: str) -> None:
    """Compute depth and saliency maps of every generated image once (resumable, shardable)."""
    from rfad.logs import quiet_third_party
    from rfad.trainer.data.prepare import parse_shard, prepare_maps

    quiet_third_party()
    try:
        written, report = prepare_maps(
            manifest, depth, saliency, out_dir, shard=parse_shard(shard) if shard else None,
            workers=workers, batch_size=batch_size, device=device, progress=True,
        )
    except USER_ERRORS as error:  # a missing model folder is a FileNotFoundError
        raise click.ClickException(str(error)) from None
    click.echo(report.format())
    click.echo(f"manifest written to {written}")

def _echo_counts(title: str, values: list, order: tuple[str, ...]) -> None:
    counts = {name: values.count(name) for name in order if name in values}
    width = max([len(title)] + [len(name) for name in counts])
    click.echo(f"  {title:<{width}}  {'rows':>8}")
    for name, count in counts.items():
        click.echo(f"  {name:<{width}}  {count:>8}")
