"""The ``rfad-train rfft`` and ``rfad-train eval-rfft`` commands (registered on ``rfad-train``'s group)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from rfad.canvas import CanvasError, CanvasSpec
from rfad.contract import InvalidRequest
from rfad.models.options import model_option, model_set_options
from rfad.pipeline.settings import GenerationSettings
from rfad.trainer.checkpoints import CheckpointError
from rfad.trainer.data.manifest import ManifestError

# What a user can fix (a bad path or value, a broken manifest, a model folder that is not one)
# is a one-line message with exit code 1; anything else is a bug and keeps its traceback.
# ModelFolderError is a FileNotFoundError.
USER_ERRORS = (ManifestError, FileNotFoundError, ValueError, CanvasError, InvalidRequest, CheckpointError)


def _quiet() -> None:
    from rfad.logs import quiet_third_party

    quiet_third_party()


@click.command("rfft")
@model_set_options(required=("models", "rfnet"), help={
    "controlnet": "Starting ControlNet folder [default: the model set's].",
    "rfnet": "RFNet folder (rfad-train rfnet output): the feedback judge.",
    "lora": "LoRA .safetensors fused into the base model (as at serving time) [default: the model set's].",
})
@click.option("--data", required=True, help="Dataset folder (manifest.jsonl/.parquet) or a manifest: product, prompt, caption per row.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "test", "all"]),
              help="Rows to train on; 'train' includes rows without a split.")
@click.option("--out", required=True, help="Output ControlNet folder (checkpoints/ and logs/ go inside).")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1), help="Optimiser steps.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Rows per micro-step per process.")
@click.option("--grad-accum", default=4, show_default=True, type=click.IntRange(min=1), help="Micro-steps per optimiser step.")
@click.option("--lr", default=1e-5, show_default=True, type=float, help="AdamW learning rate (constant).")
@click.option("--weight-decay", default=1e-2, show_default=True, type=click.FloatRange(min=0))
@click.option("--max-grad-norm", default=1.0, show_default=True, type=click.FloatRange(min=0), help="Gradient clipping (0: off).")
@click.option("--reg", default="cc", show_default=True, type=click.Choice(["cc", "kl", "none"]),
              help="Regulariser: Consistent Condition (paper), KL-style eps distance, or none (ReFL).")
@click.option("--beta", default=1.0, show_default=True, type=click.FloatRange(min=0), help="Weight of the regulariser.")
@click.option("--ddim-steps", default=GenerationSettings.steps, show_default=True, type=click.IntRange(min=1),
              help="DDIM steps T.")
@click.option("--last-k", default=10, show_default=True, type=click.IntRange(min=1), help="t* is drawn among the last K steps.")
@click.option("--guidance", default=GenerationSettings.guidance_scale, show_default=True, type=float,
              help="Classifier-free guidance scale w.")
@click.option("--controlnet-scale", default=GenerationSettings.controlnet_scale, show_default=True, type=float)
@click.option("--size", default=CanvasSpec.width, show_default=True, type=click.IntRange(min=64),
              help="Canvas side in pixels (multiple of 8).")
@click.option("--product-scale", default=CanvasSpec.product_scale, show_default=True, type=float,
              help="Largest product side as a fraction of the canvas.")
@click.option("--upscale/--no-upscale", default=CanvasSpec.upscale, show_default=True,
              help="Enlarge products smaller than --product-scale (the miniature world's canvas: --upscale).")
@click.option("--mask-dilation", default=CanvasSpec.mask_dilation, show_default=True, type=click.IntRange(min=0),
              help="Dilation of the generate-mask in pixels (the miniature world's canvas: 5).")
@click.option("--negative-prompt", default="", help="Negative prompt (the CFG branch eps(0)).")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute ControlNet, UNet and VAE-decoder activations in backward.")
@click.option("--mixed-precision", default="no", show_default=True, type=click.Choice(["no", "fp16", "bf16"]))
@click.option("--checkpoint-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also checkpoint every K optimiser steps (a checkpoint is always written at the end).")
@click.option("--keep-checkpoints", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--max-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Stop this invocation at step N with a checkpoint (continue later with --resume).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@click.option("--seed", default=GenerationSettings.seed, show_default=True, type=int)
def rfft(**options) -> None:
    """Fine-tune the ControlNet with RFNet's feedback (RFFT): F_AC + beta * L_CC."""
    from rfad.trainer.rfft.config import RFFTConfig
    from rfad.trainer.rfft.train import train_rfft

    _quiet()
    known = {f.name for f in fields(RFFTConfig)}
    try:
        train_rfft(RFFTConfig(**{k: v for k, v in options.items() if k in known}), echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None


@click.command("eval-rfft")
@model_option("models", required=True)
@model_option("controlnet", required=True, help="The tuned ControlNet folder (rfad-train rfft output).")
@model_option("controlnet", "--base-controlnet", "base_controlnet",
              help="The base ControlNet to compare with [default: the model set's].")
@model_set_options(("sd_config", "lora", "lora_scale", "rfnet", "depth", "saliency"), required=("rfnet",),
                   help={"rfnet": "RFNet folder: the judge."})
@click.option("--data", required=True, help="Dataset folder or manifest (products, prompts, captions).")
@click.option("--split", default="all", show_default=True, type=click.Choice(["train", "val", "test", "all"]),
              help="Rows to take products from (test: held-out products).")
@click.option("--products", default=100, show_default=True, type=click.IntRange(min=1), help="Distinct products.")
@click.option("--seeds", default=4, show_default=True, type=click.IntRange(min=2), help="Seeds per product.")
@click.option("--steps", default=GenerationSettings.steps, show_default=True, type=click.IntRange(min=1),
              help="DDIM steps.")
@click.option("--size", default=CanvasSpec.width, show_default=True, type=click.IntRange(min=64),
              help="Canvas side in pixels (multiple of 8).")
@click.option("--guidance", default=GenerationSettings.guidance_scale, show_default=True, type=float,
              help="Classifier-free guidance scale.")
@click.option("--max-attempts", default=GenerationSettings.max_attempts, show_default=True,
              type=click.IntRange(min=1), help="Attempts per product and seed (Recurrent Generation).")
@click.option("--threshold", default=GenerationSettings.threshold, show_default=True, type=click.FloatRange(0, 1),
              help="p(Available) needed to pass.")
@click.option("--seed", default=GenerationSettings.seed, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics here.")
def eval_rfft(json_out: Path, **options) -> None:
    """Base vs tuned ControlNet: RFNet availability (one attempt), attempts to Available, collapse."""
    from rfad.trainer.rfft.evaluate import evaluate_rfft, format_table, write_json

    _quiet()
    try:
        metrics = evaluate_rfft(echo=click.echo, **options)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_table(metrics))
    write_json(metrics, json_out)
    click.echo(f"metrics written to {json_out}")
