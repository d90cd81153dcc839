"""The ``rfad-train miniworld`` and ``rfad-train ship-judge`` commands (registered by :mod:`rfad.trainer.cli`)."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import click

from rfad.trainer.data.manifest import ManifestError
from rfad.trainer.miniworld.config import MiniworldTrainConfig

USER_ERRORS = (ManifestError, FileNotFoundError, ValueError)


def _default(name: str):
    """The option's default: MiniworldTrainConfig's (widths as the comma-separated text the option takes)."""
    field = next(f for f in fields(MiniworldTrainConfig) if f.name == name)
    value = field.default if field.default is not MISSING else field.default_factory()
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def _channels(ctx, param, value: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated ints such as 32,64, got {value!r}") from None
    if not channels or min(channels) < 8 or any(c % 8 for c in channels):
        raise click.BadParameter(f"every width must be a positive multiple of 8, got {value!r}")
    return channels


@click.command()
@click.option("--out", required=True, help="Output model set folder (rfad-models.json, sd15/, controlnet/, training_record.json).")
@click.option("--seed", default=_default("seed"), show_default=True, type=int, help="Seeds the scenes, the initial weights and every draw.")
@click.option("--scenes", default=_default("scenes"), show_default=True, type=click.IntRange(min=1), help="Training scenes to draw.")
@click.option("--available-share", default=_default("available_share"), show_default=True, type=click.FloatRange(0, 1),
              help="Share of Available scenes; the four defects share the rest equally.")
@click.option("--vae-steps", default=_default("vae_steps"), show_default=True, type=click.IntRange(min=1), help="VAE optimiser steps.")
@click.option("--vae-batch", default=_default("vae_batch"), show_default=True, type=click.IntRange(min=1), help="Crops per VAE step.")
@click.option("--vae-crop", default=_default("vae_crop"), show_default=True, type=click.IntRange(min=8), help="Side of the VAE's training crops (multiple of 8).")
@click.option("--vae-lr", default=_default("vae_lr"), show_default=True, type=float, help="VAE peak learning rate (AdamW, warm-up, cosine).")
@click.option("--vae-channels", default=_default("vae_channels"), show_default=True, callback=_channels, help="VAE block widths, 2 to 4 blocks (4: latent factor 8, 16 x 16 latents at 128 px; 3: factor 4, 32 x 32).")
@click.option("--norm-groups", default=_default("norm_groups"), show_default=True, type=click.IntRange(min=1),
              help="GroupNorm groups of the VAE, UNet and ControlNet (must divide every width).")
@click.option("--unet-steps", default=_default("unet_steps"), show_default=True, type=click.IntRange(min=1), help="UNet optimiser steps.")
@click.option("--unet-batch", default=_default("unet_batch"), show_default=True, type=click.IntRange(min=1), help="Latents per UNet step.")
@click.option("--unet-lr", default=_default("unet_lr"), show_default=True, type=float, help="UNet (and text encoder) peak learning rate.")
@click.option("--unet-channels", default=_default("unet_channels"), show_default=True, callback=_channels, help="UNet block widths.")
@click.option("--text-encoder", default=_default("text_encoder"), show_default=True, type=click.Choice(["train", "frozen"]),
              help="Fine-tune the tiny CLIP with the UNet, or keep the zoo's random weights.")
@click.option("--controlnet-steps", default=_default("controlnet_steps"), show_default=True, type=click.IntRange(min=1), help="ControlNet optimiser steps.")
@click.option("--controlnet-batch", default=_default("controlnet_batch"), show_default=True, type=click.IntRange(min=1), help="Latents per ControlNet step.")
@click.option("--controlnet-lr", default=_default("controlnet_lr"), show_default=True, type=float, help="ControlNet peak learning rate.")
@click.option("--uncond-prob", default=_default("uncond_prob"), show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of prompts replaced by the empty prompt (classifier-free guidance).")
@click.option("--snr-gamma", default=_default("snr_gamma"), show_default=True, type=click.FloatRange(min=0), help="Min-SNR loss weighting (0: plain MSE).")
@click.option("--check-per-class", default=_default("check_per_class"), show_default=True, type=click.IntRange(min=1),
              help="Scenes per class for the oracle check of the VAE's reconstructions.")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
@click.option("--log-every", default=_default("log_every"), show_default=True, type=click.IntRange(min=1), help="Steps per point of the recorded loss curves.")
@click.option("--checkpoint-every", default=_default("checkpoint_every"), show_default=True, type=click.IntRange(min=0),
              help="Steps between checkpoints of the phase in progress (a multiple of --log-every; 0: none): a stopped "
                   "phase resumes from its last one.")
@click.option("--stop-after", type=click.Choice(["vae", "unet"]),
              help="Stop once this phase is kept in OUT.stages (split a long run into parts); the same command without it resumes.")
def miniworld(**options) -> None:
    """Train the miniature world's generator: tiny VAE, 4-channel UNet (+ tiny CLIP) and canny ControlNet.

    Draws the scenes (rfad.trainer.data.scenes), trains the three models on this machine's CPU and
    writes a model set folder that every `--models DIR` command loads, with training_record.json
    (settings, seed, losses, times, SHA-256 of every file). docs/miniworld.md has the shipped run.

    The VAE and UNet phases are kept in OUT.stages as they finish, and the phase in progress is
    checkpointed there every --checkpoint-every steps: run the same command again after a stop and
    it resumes from there (a phase kept under other settings is refused).
    """
    from rfad.trainer.miniworld.train import train_miniworld

    known = {f.name for f in fields(MiniworldTrainConfig)}
    try:
        train_miniworld(MiniworldTrainConfig(**{k: v for k, v in options.items() if k in known}), echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None


def _command_line() -> list[str]:
    """The running command as it would be typed: ``rfad-train ship-judge`` and each option given."""
    context = click.get_current_context()
    line = ["rfad-train", context.info_name]
    for param in context.command.params:
        value = context.params.get(param.name)
        if isinstance(param, click.Option) and value not in (None, ""):
            line += [param.opts[0], str(value)]
    return line


@click.command("ship-judge")
@click.option("--rfnet", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The RFNet folder to ship (rfad-train rfnet output, trained on RF-mini).")
@click.option("--depth", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The DPT folder the judge's training maps were computed with (served with it).")
@click.option("--saliency", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The U2-Net folder the judge's training maps were computed with (served with it).")
@click.option("--metrics", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its test-split metrics (rfad-train eval-rfnet --json), kept in the training record.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The world's model set folder, replaced (rfad/miniworld/judge in a checkout ships it with the package).")
@click.option("--made-by", default="", help="How the judge was trained, in words, kept in the training record.")
@click.option("--heldout", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A manifest (RF-mini's) whose first test products' images ship as heldout/, scored into the record.")
@click.option("--heldout-products", default=10, show_default=True, type=click.IntRange(min=1),
              help="Test products of --heldout to ship (all their test images).")
def ship_judge(rfnet, depth, saliency, metrics, out, made_by, heldout, heldout_products) -> None:
    """Ship a trained RFNet as the miniature world's judge: the world's full model set (generator, judge, maps, canvas).

    Writes --out as a model set of the shipped generator, this RFNet, its depth and saliency
    models and the miniature world's canvas, with training_record.json (command, training config,
    test-split metrics, SHA-256 of every file). `rfad demo` serves the one in rfad/miniworld/judge.
    """
    from rfad.trainer.miniworld.ship_judge import ship_judge as ship

    try:
        shipped = ship(rfnet, depth, saliency, metrics, out, _command_line(), made_by=made_by, heldout=heldout,
                       heldout_products=heldout_products)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"shipped {shipped['files']} files ({shipped['bytes'] / 1e6:.1f} MB) into {shipped['out']}")


@click.command("maps")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: dpt/ and u2net/ model folders and training_record.json.")
@click.option("--scenes", default=3000, show_default=True, type=click.IntRange(min=1), help="Training scenes to draw.")
@click.option("--steps", default=1500, show_default=True, type=click.IntRange(min=1), help="Optimiser steps.")
@click.option("--batch", default=16, show_default=True, type=click.IntRange(min=1), help="Scenes per step.")
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Peak learning rate (AdamW, cosine).")
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=32),
              help="The maps' working size in pixels (a multiple of 8).")
@click.option("--check", default=200, show_default=True, type=click.IntRange(min=1), help="Held-out scenes of the check.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the scenes and the initial weights.")
@click.option("--models", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The generator whose VAE decodes the scenes [default: the shipped one].")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
def maps(out, scenes, steps, batch, lr, size, check, seed, models, threads) -> None:
    """Train the miniature world's depth (DPT) and saliency (U2-Net) models on drawn scenes' own truth.

    Saliency: the product's silhouette; depth: the scene's layout (wall far, table nearer row by row,
    objects at the row they stand on). Inputs are the scenes decoded by the generator's VAE, the
    product pasted back. Ship them with `rfad-train ship-judge --depth OUT/dpt --saliency OUT/u2net`.
    """
    import torch

    from rfad.trainer.miniworld.maps import MapsTrainConfig, train_maps

    if threads:
        torch.set_num_threads(threads)
    try:
        config = MapsTrainConfig(out=str(out), scenes=scenes, steps=steps, batch=batch, lr=lr, size=size, check=check,
                                 seed=seed, models=None if models is None else str(models))
        train_maps(config, echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"depth and saliency models written to {out}/dpt and {out}/u2net")


@click.command("decoder")
@click.option("--models", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A miniature-world generator (rfad-train miniworld output, with its training_record.json).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the set with the fine-tuned decoder goes (a new folder; --models itself to change it in place).")
@click.option("--steps", default=1500, show_default=True, type=click.IntRange(min=1), help="Optimiser steps.")
@click.option("--batch", default=16, show_default=True, type=click.IntRange(min=1), help="Crops per step.")
@click.option("--crop", default=64, show_default=True, type=click.IntRange(min=8), help="Crop side (a multiple of 8).")
@click.option("--lr", default=5e-4, show_default=True, type=float, help="Peak learning rate (AdamW, warm-up, cosine).")
@click.option("--check-per-class", default=60, show_default=True, type=click.IntRange(min=1),
              help="Scenes per class of the oracle check on reconstructions, before and after.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
def decoder(models, out, steps, batch, crop, lr, check_per_class, seed, threads) -> None:
    """Fine-tune a generator's VAE decoder with its encoder frozen: sharper images from the same latents.

    The UNet and ControlNet were trained on the encoder's latents, which do not change, so the set
    stays consistent. training_record.json gains a decoder_finetune section (settings, losses, the
    oracle's agreement on reconstructions before and after).
    """
    import torch

    from rfad.logs import quiet_third_party
    from rfad.trainer.miniworld.decoder import DecoderTrainConfig, train_decoder

    quiet_third_party()
    if threads:
        torch.set_num_threads(threads)
    try:
        train_decoder(DecoderTrainConfig(models=str(models), out=str(out), steps=steps, batch=batch, crop=crop, lr=lr,
                                         check_per_class=check_per_class, seed=seed), echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"the set with the fine-tuned decoder is in {out}")
