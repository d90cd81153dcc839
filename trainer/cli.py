"""``rfad-train``: train and evaluate the RFNet judge (and, with RFFT, the ControlNet)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import click

from rfad.trainer.checkpoints import CheckpointError
from rfad.trainer.data.manifest import ManifestError

USER_ERRORS = (ManifestError, CheckpointError, FileNotFoundError, ValueError)


@click.group()
def main() -> None:
    """Train and evaluate rfad's models."""
    from rfad.logs import quiet_third_party

    quiet_third_party()


@main.command()
@click.option("--data", required=True, help="Dataset folder (with manifest.jsonl/.parquet) or a manifest file.")
@click.option("--out", required=True, help="Output RFNet folder (checkpoints and logs go inside).")
@click.option("--tiny", is_flag=True, help="Tiny random-weight backbones and map models (tests, demos); lr 1e-3, 64 px.")
@click.option("--resnet", help="Pretrained ResNet-50 folder (transformers).")
@click.option("--roberta", help="Pretrained RoBERTa folder (transformers, with tokenizer).")
@click.option("--depth", help="DPT folder, for rows without cached maps.")
@click.option("--saliency", help="U2-Net folder or .pth, for rows without cached maps.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", type=float, help="Learning rate [default: 1e-4; 1e-3 with --tiny].")
@click.option("--lr-step-epoch", type=int, help="Epoch from which lr is x0.1 [default: epochs // 2].")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", type=int, help="RFNet input side [default: 384; 64 with --tiny].")
@click.option("--mixed-precision", default="no", show_default=True, type=click.Choice(["no", "fp16", "bf16"]))
@click.option("--class-weights", default="none", show_default=True, type=click.Choice(["none", "balanced"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--checkpoint-steps", default=0, show_default=True, type=int, help="Also checkpoint every N steps.")
@click.option("--max-steps", default=0, show_default=True, type=int,
              help="Stop after N optimiser steps with a checkpoint (continue later with --resume).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
def rfnet(**options) -> None:
    """Train RFNet (AdamW, lr stepped x0.1 halfway, cross-entropy over the 5 classes)."""
    from rfad.trainer.rfnet.train import RFNetTrainConfig, train_rfnet

    known = {f.name for f in fields(RFNetTrainConfig)}
    try:
        train_rfnet(RFNetTrainConfig(**{k: v for k, v in options.items() if k in known}), echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None


@main.command("eval-rfnet")
@click.option("--model", "model_dir", required=True, help="RFNet folder (rfad-train rfnet output).")
@click.option("--data", required=True, help="Dataset folder or manifest.")
@click.option("--split", default="test", show_default=True)
@click.option("--depth", help="DPT folder, for rows without cached maps.")
@click.option("--saliency", help="U2-Net folder or .pth, for rows without cached maps.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics here.")
def eval_rfnet(model_dir, data, split, depth, saliency, json_out) -> None:
    """Precision/recall/F1/AP (Available vs not), accuracy vs the majority baseline, per class, confusion."""
    from rfad.trainer.rfnet.evaluate import evaluate_rfnet, format_metrics

    try:
        metrics = evaluate_rfnet(model_dir, data, split, depth, saliency, echo=click.echo)
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_metrics(metrics))
    if json_out is not None:
        json_out.write_text(json.dumps(metrics, indent=2) + "\n")
        click.echo(f"metrics written to {json_out}")


# RFFT's commands live beside its trainer (rfad.trainer.rfft); the group only registers them.
from rfad.trainer.rfft.commands import eval_rfft, rfft  # noqa: E402

main.add_command(rfft)
main.add_command(eval_rfft)


if __name__ == "__main__":
    main()
