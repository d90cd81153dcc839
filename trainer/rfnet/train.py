"""``rfad-train rfnet``: train the RFNet judge on a manifest (DESIGN.md section 4).

One loop, top to bottom: config -> data -> model -> optimiser -> epochs of accumulated steps
-> validation -> checkpoints -> the final RFNet folder. accelerate handles devices, mixed
precision, gradient accumulation and multi-process launch (``accelerate launch`` or
``torchrun``; gloo on CPU).

Resume is exact: the data order of an epoch is a function of (seed, epoch), every optimiser
step's checkpoint holds weights, optimizer state and each process's RNG state, so a resumed
run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rfad.contract import CLASS_NAMES
from rfad.trainer.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from rfad.trainer.data.manifest import check_rows, read_manifest
from rfad.trainer.rfnet.dataset import MODEL_INPUTS, MapModels, RFNetDataset


@dataclass
class RFNetTrainConfig:
    data: str
    out: str
    tiny: bool = False
    resnet: str | None = None
    roberta: str | None = None
    depth: str | None = None
    saliency: str | None = None
    epochs: int = 10
    lr: float | None = None  # 1e-4 (paper); 1e-3 with --tiny
    lr_step_epoch: int | None = None  # lr x0.1 from this (0-based) epoch on: paper 5 of 10; default (epochs + 1) // 2
    batch_size: int = 16
    grad_accum: int = 1
    image_size: int | None = None  # 384 (paper); 64 with --tiny
    mixed_precision: str = "no"
    class_weights: str = "none"  # none | balanced
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_steps: int = 0  # also checkpoint every N optimiser steps (0: per epoch only)
    keep_checkpoints: int = 2
    max_steps: int = 0  # stop after N optimiser steps in total, with a checkpoint (0: run all epochs)
    resume: bool = False

    def resolved(self) -> "RFNetTrainConfig":
        values = asdict(self)
        values["lr"] = self.lr if self.lr is not None else (1e-3 if self.tiny else 1e-4)
        values["image_size"] = self.image_size or (64 if self.tiny else 384)
        values["lr_step_epoch"] = self.lr_step_epoch if self.lr_step_epoch is not None else (self.epochs + 1) // 2
        return RFNetTrainConfig(**values)


def _manifest_path(data: str) -> Path:
    path = Path(data)
    if path.is_dir():
        for name in ("manifest.jsonl", "manifest.parquet"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"--data {path}: no manifest.jsonl or manifest.parquet in that folder")
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist")
    return path


def load_split_rows(data: str, split: str, echo=print):
    """Rows of ``split`` that pass ``check_rows`` (bad rows reported, never used), and the manifest folder."""
    manifest = _manifest_path(data)
    rows = [row for row in read_manifest(manifest) if row.split == split]
    good, report = check_rows(rows, manifest.parent)
    if report.n_skipped:
        echo(report.format(title=f"{split} rows"))
    return [row for row in good if row.label is not None], manifest.parent


def build_model_and_tokenizer(config: RFNetTrainConfig):
    """A fresh RFNet (tiny: random backbones; else ResNet/RoBERTa from local folders) and its caption tokenizer."""
    from transformers import AutoTokenizer

    from rfad.models.rfnet import RFNet, RFNetConfig, tiny_rfnet_config

    if config.tiny:
        from rfad.tiny.tokenizers import build_roberta_tokenizer

        tokenizer = build_roberta_tokenizer()
        model_config = tiny_rfnet_config()
        model_config.image_size = config.image_size
        model_config.roberta["vocab_size"] = len(tokenizer)
        torch.manual_seed(config.seed)
        return RFNet(model_config), tokenizer
    if config.resnet is None or config.roberta is None:
        raise ValueError("pass --resnet DIR and --roberta DIR (pretrained backbones), or --tiny")
    tokenizer = AutoTokenizer.from_pretrained(config.roberta, local_files_only=True)
    torch.manual_seed(config.seed)
    model_config = RFNetConfig(image_size=config.image_size)
    return RFNet.from_backbones(model_config, config.resnet, config.roberta), tokenizer


def build_map_models(config: RFNetTrainConfig) -> MapModels | None:
    """Depth/saliency models for rows without cached maps (tiny: the zoo's random tiny ones, seeded)."""
    from rfad.models.maps import DepthEstimator, SaliencyEstimator

    if config.depth is not None and config.saliency is not None:
        return MapModels(DepthEstimator.from_pretrained(config.depth), SaliencyEstimator.from_pretrained(config.saliency))
    if config.tiny:
        from rfad.models.u2net import build_tiny_u2net
        from rfad.tiny.zoo import tiny_dpt

        return MapModels(DepthEstimator(tiny_dpt(config.seed), size=64).eval(),
                         SaliencyEstimator(build_tiny_u2net(config.seed), size=64).eval())
    return None


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """This process's sample order for ``epoch``: a permutation fixed by (seed, epoch), dealt round-robin
    and cut to equal length so every process takes the same number of steps (DDP needs that)."""
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    per_rank = n // world
    return permutation[rank::world][:per_rank]


def _class_weights(rows, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = torch.tensor([sum(r.label == name for r in rows) for name in CLASS_NAMES], dtype=torch.float32)
    return counts.sum() / (len(CLASS_NAMES) * counts.clamp_min(1))


@torch.no_grad()
def predict(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities [N, 5], labels [N]) of a loader's samples."""
    model.eval()
    probabilities, labels = [], []
    for batch in loader:
        logits = model(*(batch[name].to(device) for name in MODEL_INPUTS))
        probabilities.append(logits.float().softmax(-1).cpu())
        labels.append(batch["label"])
    model.train()
    return torch.cat(probabilities), torch.cat(labels)


def train_rfnet(config: RFNetTrainConfig, echo=print) -> Path:
    """Train and write the RFNet folder ``config.out`` (weights, config, caption tokenizer, train_log.json)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config = config.resolved()
    out = Path(config.out)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                              log_with="tensorboard", project_dir=str(out / "logs"))
    main = accelerator.is_main_process
    say = echo if main else (lambda *_: None)
    set_seed(config.seed)

    # --- data -------------------------------------------------------------------------------
    train_rows, root = load_split_rows(config.data, "train", say)
    val_rows, _ = load_split_rows(config.data, "val", say)
    if not train_rows:
        raise ValueError(f"--data {config.data}: no usable labelled rows with split 'train'")
    model, tokenizer = build_model_and_tokenizer(config)
    maps = build_map_models(config)
    max_tokens = model.config.max_caption_tokens
    train_set = RFNetDataset(train_rows, root, tokenizer, config.image_size, max_tokens, maps)
    val_set = RFNetDataset(val_rows, root, tokenizer, config.image_size, max_tokens, maps) if val_rows else None
    weights = _class_weights(train_rows, config.class_weights)

    # --- optimiser and resume ---------------------------------------------------------------
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    checkpoints = out / "checkpoints"
    start_epoch, step, skip_steps, history = 0, 0, 0, []
    if config.resume:
        latest = latest_checkpoint(checkpoints)
        if latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {checkpoints}")
        state_weights, optimizer_state, rng, state = load_checkpoint(latest, accelerator.process_index)
        model.load_state_dict(state_weights)
        optimizer.load_state_dict(optimizer_state)
        if rng is not None:
            torch.set_rng_state(rng)
        start_epoch, step, skip_steps, history = state["epoch"], state["step"], state["step_in_epoch"], state["history"]
        say(f"resuming from {latest} (epoch {start_epoch + 1}, step {step})")
    model, optimizer = accelerator.prepare(model, optimizer)
    if main:
        accelerator.init_trackers("rfnet", config={k: v for k, v in asdict(config).items() if v is not None})

    micro_batches = len(train_set) // accelerator.num_processes // config.batch_size
    steps_per_epoch = max(1, micro_batches // config.grad_accum)

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        rngs = accelerator.gather(torch.get_rng_state().unsqueeze(0).to(accelerator.device)).cpu()
        if main:
            save_checkpoint(checkpoints, step, accelerator.unwrap_model(model).state_dict(), optimizer.state_dict(),
                            list(rngs), {"epoch": epoch, "step_in_epoch": step_in_epoch, "history": history},
                            keep=config.keep_checkpoints)
        accelerator.wait_for_everyone()

    # --- the loop ---------------------------------------------------------------------------
    progress = tqdm(total=steps_per_epoch * config.epochs, initial=step, unit="step", desc="rfnet", disable=not main)
    stopped = False
    for epoch in range(start_epoch, config.epochs):
        lr = config.lr * (0.1 if epoch >= config.lr_step_epoch else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = epoch_order(len(train_set), config.seed, epoch, accelerator.process_index, accelerator.num_processes)
        order = order[skip_steps * config.grad_accum * config.batch_size:]
        loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, sampler=order, drop_last=True)
        step_in_epoch = skip_steps
        skip_steps = 0
        for batch in loader:
            with accelerator.accumulate(model):
                logits = model(*(batch[name].to(accelerator.device) for name in MODEL_INPUTS))
                loss = F.cross_entropy(logits.float(), batch["label"].to(accelerator.device),
                                       weight=None if weights is None else weights.to(accelerator.device))
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            step_in_epoch += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch + 1)
            accelerator.log({"train/loss": loss.item(), "train/lr": lr}, step=step)
            if config.checkpoint_steps and step % config.checkpoint_steps == 0:
                checkpoint(epoch, step_in_epoch)
            if config.max_steps and step >= config.max_steps:
                checkpoint(epoch, step_in_epoch)
                stopped = True
                break
        if stopped:
            break
        record = {"epoch": epoch + 1, "step": step, "lr": lr}
        if val_set is not None:
            val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.batch_size)
            probabilities, labels = predict(model, val_loader, accelerator.device)
            record["val_accuracy"] = float((probabilities.argmax(-1) == labels).float().mean())
            accelerator.log({"val/accuracy": record["val_accuracy"]}, step=step)
        history.append(record)
        say(f"epoch {epoch + 1}/{config.epochs}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in record.items() if k != "epoch"))
        checkpoint(epoch + 1, 0)
    progress.close()
    accelerator.end_training()

    if main and not stopped:
        # The final model is the last epoch's (the paper trains a fixed 10-epoch schedule);
        # train_log.json has every epoch's validation accuracy.
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "train_log.json").write_text(json.dumps({"config": asdict(config), "history": history}, indent=2) + "\n")
        say(f"RFNet written to {out}")
    accelerator.wait_for_everyone()
    return out

