"""``rfad-train``: train and evaluate the RFNet judge (and, with RFFT, the ControlNet); train the miniature
world's generator and ship its judge."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import click

from rfad.contract import DEFAULTS, RFNET_ABLATIONS
from rfad.pipeline.settings import GenerationSettings
from rfad.trainer.checkpoints import CheckpointError
from rfad.trainer.data.manifest import ManifestError

# What a user can fix (a bad path, a bad value, a broken manifest, a corrupt checkpoint) is a
# one-line message with exit code 1; anything else is a bug and keeps its traceback.
USER_ERRORS = (ManifestError, FileNotFoundError, ValueError, CheckpointError)


@click.group()
def main() -> None:
    """Train and evaluate rfad's models."""
    from rfad.logs import quiet_third_party

    quiet_third_party()


@main.command()
@click.option("--data", required=True, help="Dataset folder (with manifest.jsonl/.parquet) or a manifest file.")
@click.option("--out", required=True, help="Output RFNet folder (checkpoints and logs go inside).")
@click.option("--tiny", is_flag=True, help="Tiny random-weight backbones, map models and offline tokenizer (tests, demos); lr 1e-3, 64 px.")
@click.option("--backbone", default="tiny", show_default=True, type=click.Choice(["tiny", "mini"]),
              help="With --tiny: the small RFNet's shape (mini: the miniature world's judge, a 3-stage ResNet, "
                   "8 x 8 tokens at 128 px).")
@click.option("--resnet", help="Pretrained ResNet-50 folder (transformers).")
@click.option("--roberta", help="Pretrained RoBERTa folder (transformers, with tokenizer).")
@click.option("--depth", help="DPT folder, for rows without cached maps.")
@click.option("--saliency", help="U2-Net folder or .pth, for rows without cached maps.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", type=float, help="Learning rate [default: 1e-4; 1e-3 with --tiny].")
@click.option("--lr-step-epoch", type=click.IntRange(min=0), help="0-based epoch from which lr is x0.1 [default: (epochs + 1) // 2, the paper's 5 of 10].")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", type=click.IntRange(min=32), help="RFNet input side, a multiple of the backbone's stride (32; 16 for --backbone mini) [default: 384; 64 with --tiny].")
@click.option("--product-scale", default=DEFAULTS.product_scale, show_default=True,
              type=click.FloatRange(0, 1, min_open=True),
              help="Largest product side as a fraction of the canvas the product image is placed on: the served "
                   "canvas's (a model set's declared product_scale, e.g. the miniature world's 0.5).")
@click.option("--mixed-precision", default="no", show_default=True, type=click.Choice(["no", "fp16", "bf16"]))
@click.option("--class-weights", default="none", show_default=True, type=click.Choice(["none", "balanced"]))
@click.option("--weight-decay", default=0.01, show_default=True, type=click.FloatRange(min=0))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--checkpoint-steps", default=0, show_default=True, type=click.IntRange(min=0), help="Also checkpoint every N optimiser steps (0: every epoch only).")
@click.option("--keep-checkpoints", default=2, show_default=True, type=click.IntRange(min=1), help="Keep the newest K checkpoints.")
@click.option("--max-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Stop after N optimiser steps with a checkpoint (continue later with --resume).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@click.option("--ablate", multiple=True, type=click.Choice(RFNET_ABLATIONS),
              help="Switch off an input (zeros in its place) or the Feature Filter Module; repeatable (ablation studies).")
@click.option("--train-fraction", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Train on this share of the training split's products, drawn by --seed (learning curves).")
@click.option("--separate-backbones", is_flag=True,
              help="One image backbone per input (product, generated image, depth, saliency) instead of one shared: "
                   "each BatchNorm then sees one kind of image. Not with --init (the init's backbones are kept).")
@click.option("--init", type=click.Path(exists=True, file_okay=False),
              help="Start from this RFNet folder's weights and tokenizer (fine-tuning, e.g. a judge pretrained on "
                   "drawn scenes); --image-size must match it.")
def rfnet(**options) -> None:
    """Train RFNet (AdamW, cross-entropy over the 5 classes, lr x0.1 from the middle epoch).

    Writes --out as an RFNet folder (the LAST epoch's weights, caption tokenizer, train_log.json),
    with checkpoints/ and TensorBoard logs/ inside. Several processes (CPU: gloo):
    `torchrun --nproc_per_node N -m rfad.trainer.cli rfnet ...` or
    `accelerate launch --multi_gpu --num_processes N -m rfad.trainer.cli rfnet ...`
    (without GPUs, accelerate launches a single process unless --multi_gpu is given).
    """
    from rfad.trainer.rfnet.train import RFNetTrainConfig, train_rfnet

    known = {f.name for f in fields(RFNetTrainConfig)}
    try:
        train_rfnet(RFNetTrainConfig(**{k: v for k, v in options.items() if k in known}), echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None


@main.command("eval-rfnet")
@click.option("--model", "model_dir", required=True, help="RFNet folder (rfad-train rfnet output).")
@click.option("--data", required=True, help="Dataset folder or manifest.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--depth", help="DPT folder, for rows without cached maps.")
@click.option("--saliency", help="U2-Net folder or .pth, for rows without cached maps.")
@click.option("--threshold", default=GenerationSettings.threshold, show_default=True, type=click.FloatRange(0, 1),
              help="p(Available) at which a sample is judged Available (the serving loop's default).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--product-scale", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Place the product image at this fraction of the canvas [default: the scale the model was "
                   "trained at, from its train_log.json; required for a model without one].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the metrics here (with --per-image, every row's probabilities too).")
@click.option("--per-image", is_flag=True, help="Keep each row's id, label and class probabilities in --json.")
def eval_rfnet(model_dir, data, split, depth, saliency, threshold, batch_size, product_scale, json_out,
               per_image) -> None:
    """Precision/recall/F1/AP (Available vs not), accuracy vs the majority baseline, per class, confusion."""
    from rfad.trainer.rfnet.evaluate import evaluate_rfnet, format_metrics

    if per_image and json_out is None:
        raise click.UsageError("--per-image needs --json FILE (where the rows go)")
    try:
        metrics = evaluate_rfnet(model_dir, data, split, depth, saliency, batch_size=batch_size,
                                 threshold=threshold, product_scale=product_scale, per_image=per_image,
                                 echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_metrics(metrics))
    if json_out is not None:
        partial = json_out.with_name(json_out.name + ".partial")
        partial.write_text(json.dumps(metrics, indent=2) + "\n")
        partial.replace(json_out)
        click.echo(f"metrics written to {json_out}")


# RFFT's commands live beside its trainer (rfad.trainer.rfft); the group only registers them.
from rfad.trainer.miniworld.commands import decoder, maps, miniworld, ship_judge  # noqa: E402
from rfad.trainer.rfft.commands import eval_rfft, rfft  # noqa: E402

main.add_command(rfft)
main.add_command(eval_rfft)
main.add_command(miniworld)
main.add_command(ship_judge)
main.add_command(maps)
main.add_command(decoder)


if __name__ == "__main__":
    main()
