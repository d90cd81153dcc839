"""``rfad-train rfnet``: train the RFNet judge on a manifest (docs/design.md, RFNet).

One loop, top to bottom: config -> data -> model -> optimiser -> resume -> epochs of
accumulated steps -> validation -> checkpoints -> the final RFNet folder. accelerate handles
devices, mixed precision, gradient accumulation, multi-process launch (``accelerate launch``
or ``torchrun``; gloo on CPU), TensorBoard logging and the training state.

Resume is exact (bit-for-bit on CPU): the data order of an epoch is a function of (seed,
epoch, process) only, the DataLoaders draw from their own seeded generators (never from the
global RNG that dropout uses), and a checkpoint is ``accelerator.save_state`` (weights in
safetensors; optimizer, GradScaler, accumulation counter and every process's RNG states read
back with ``weights_only=True``) plus ``state.json`` (epoch, step, step in epoch, history),
written and verified by :mod:`rfad.trainer.checkpoints`: a temporary folder renamed into
place, so a run killed at any moment leaves the previous checkpoint or the new one, and the
SHA-256 of every file checked before a resume, so a corrupt one is a clear error.

The final model is the LAST epoch's (the paper trains a fixed schedule: 10 epochs, lr x0.1
at epoch 5); ``train_log.json`` records every epoch's validation accuracy and names the best.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rfad.contract import CLASS_NAMES, DEFAULTS
from rfad.trainer.checkpoints import (
    checkpoint_to_resume,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    several_cpu_processes,
    write_folder_atomically,
)
from rfad.trainer.data.manifest import check_rows, manifest_path, read_manifest
from rfad.trainer.rfnet.dataset import MODEL_INPUTS, MapModels, RFNetDataset

TRAIN_LOG = "train_log.json"

# --tiny defaults (tests and the demo). Measured on `rfad-data synth --n 600` (test split, majority
# baseline 0.20), 2 CPU cores: 3 epochs -> accuracy 0.41-0.48 in about 25 s; 5 epochs -> 0.54-0.64.
# lr 3e-3 was no better, batch size 8 and 96 px were no better and slower.
TINY_LR = 1e-3
TINY_IMAGE_SIZE = 64


@dataclass
class RFNetTrainConfig:
    """Every flag of ``rfad-train rfnet``; ``None`` fields take the defaults of :meth:`resolved`."""

    data: str
    out: str
    tiny: bool = False
    backbone: str = "tiny"  # with tiny: rfad.models.rfnet.SMALL_RFNETS' shape
    resnet: str | None = None
    roberta: str | None = None
    depth: str | None = None
    saliency: str | None = None
    epochs: int = 10
    lr: float | None = None  # 1e-4 (paper); TINY_LR with --tiny
    lr_step_epoch: int | None = None  # lr x0.1 from this 0-based epoch on; default (epochs + 1) // 2 (paper: 5 of 10)
    batch_size: int = 16
    grad_accum: int = 1
    image_size: int | None = None  # 384 (paper); TINY_IMAGE_SIZE with --tiny
    product_scale: float = DEFAULTS.product_scale  # I_o's placement: the served canvas's product_scale
    mixed_precision: str = "no"
    class_weights: str = "none"  # none | balanced
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_steps: int = 0  # also checkpoint every N optimiser steps (0: per epoch only)
    keep_checkpoints: int = 2
    max_steps: int = 0  # stop after N optimiser steps in total, with a checkpoint (0: run all epochs)
    resume: bool = False
    ablate: tuple[str, ...] = ()  # RFNet inputs/modules switched off (rfad.contract.RFNET_ABLATIONS)
    init: str | None = None  # start from this RFNet folder's weights (fine-tuning) instead of fresh ones
    train_fraction: float = 1.0  # train on this share of the training split's products (learning curves)
    separate_backbones: bool = False  # one image backbone per input instead of one shared (not with init)

    def resolved(self) -> "RFNetTrainConfig":
        values = asdict(self)
        values["lr"] = self.lr if self.lr is not None else (TINY_LR if self.tiny else 1e-4)
        values["image_size"] = self.image_size or (TINY_IMAGE_SIZE if self.tiny else 384)
        values["lr_step_epoch"] = self.lr_step_epoch if self.lr_step_epoch is not None else (self.epochs + 1) // 2
        if self.backbone != "tiny" and not self.tiny:
            raise ValueError(f"--backbone {self.backbone}: a small RFNet's shape; it needs --tiny")
        if values["image_size"] % 16:  # every backbone's stride divides 32; the exact one is checked with the model
            raise ValueError(f"--image-size {values['image_size']}: must be a multiple of the backbone's stride "
                             "(32; 16 for --backbone mini)")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train-fraction {self.train_fraction}: must be in (0, 1]")
        if not 0 < self.product_scale <= 1:
            raise ValueError(f"--product-scale {self.product_scale}: must be in (0, 1]")
        if self.class_weights not in ("none", "balanced"):
            raise ValueError(f"--class-weights {self.class_weights!r}: expected none or balanced")
        if self.keep_checkpoints < 1:
            raise ValueError("--keep-checkpoints must be at least 1 (resume needs the latest checkpoint)")
        return RFNetTrainConfig(**values)


# --- data -------------------------------------------------------------------------------------


def load_split_rows(data: str | os.PathLike, split: str, echo=print):
    """(labelled rows of ``split`` that pass ``check_rows``, the manifest's folder).

    Bad rows (missing or undecodable files, unknown labels, products without alpha) are
    reported through ``echo`` by reason and never reach a batch.
    """
    manifest = manifest_path(data)
    rows = [row for row in read_manifest(manifest) if row.split == split]
    good, report = check_rows(rows, manifest.parent)
    if report.n_skipped:
        echo(report.format(title=f"{manifest} split {split!r}"))
    unlabelled = sum(row.label is None for row in good)
    if unlabelled:
        echo(f"{manifest} split {split!r}: {unlabelled} unlabelled rows not used")
    return [row for row in good if row.label is not None], manifest.parent


def products_share(rows, fraction: float, seed: int):
    """The rows of ``ceil(fraction x products)`` products, drawn by ``seed`` (all rows when fraction is 1):
    whole products, so a learning curve's smaller sets hold fewer products, not fewer images of each."""
    if fraction >= 1:
        return rows
    products = sorted({row.product for row in rows})
    order = torch.randperm(len(products), generator=torch.Generator().manual_seed(seed)).tolist()
    count = max(1, math.ceil(fraction * len(products) - 1e-9))  # the tolerance keeps 0.25 x 8 at 2, not 3
    kept = {products[i] for i in order[:count]}
    return [row for row in rows if row.product in kept]


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int, take: int) -> list[int]:
    """This process's sample indices for ``epoch``: a permutation fixed by (seed, epoch), dealt
    round-robin to the processes, each share cut to ``take`` samples (whole optimiser steps, the
    same count on every process, as DDP needs)."""
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    return permutation[rank::world][:take]


def class_weights(rows, mode: str) -> torch.Tensor | None:
    """``balanced``: weight [5] = N / (5 * count of the class) (sklearn's rule); ``none``: None."""
    if mode == "none":
        return None
    counts = torch.tensor([sum(row.label == name for row in rows) for name in CLASS_NAMES], dtype=torch.float32)
    return counts.sum() / (len(CLASS_NAMES) * counts.clamp_min(1))


# --- models -----------------------------------------------------------------------------------


def build_model_and_tokenizer(config: RFNetTrainConfig):
    """(a fresh RFNet, its caption tokenizer): tiny random backbones with ``--tiny``, else the
    pretrained ResNet and RoBERTa folders (the tokenizer comes from the RoBERTa folder)."""
    from rfad.models.rfnet import RFNet, RFNetConfig, tiny_rfnet_config

    torch.manual_seed(config.seed)  # the new layers' initialisation depends on the seed only
    if config.init is not None:
        return _from_rfnet_folder(config)
    if config.tiny:
        from rfad.tiny.tokenizers import build_roberta_tokenizer

        tokenizer = build_roberta_tokenizer()
        try:  # replace() validates the size against this backbone's stride
            model_config = dataclasses.replace(tiny_rfnet_config(config.backbone), image_size=config.image_size,
                                               ablate=list(config.ablate),
                                               shared_backbone=not config.separate_backbones)
        except ValueError as error:
            raise ValueError(f"--image-size {config.image_size}: {error}") from None
        model_config.roberta["vocab_size"] = len(tokenizer)
        return RFNet(model_config), tokenizer
    if config.resnet is None or config.roberta is None:
        raise ValueError("pass --resnet DIR and --roberta DIR (pretrained backbone folders), or --tiny")
    from transformers import AutoTokenizer

    from rfad.models.folders import check_tokenizer_folder

    tokenizer = AutoTokenizer.from_pretrained(check_tokenizer_folder(config.roberta, "RoBERTa tokenizer"),
                                              local_files_only=True)
    model = RFNet.from_backbones(RFNetConfig(image_size=config.image_size, ablate=list(config.ablate),
                                             shared_backbone=not config.separate_backbones), config.resnet, config.roberta)
    return model, tokenizer


def _from_rfnet_folder(config: RFNetTrainConfig):
    """(the RFNet of ``--init`` with this run's ablations, its caption tokenizer): fine-tuning a trained judge."""
    from transformers import AutoTokenizer

    from rfad.models.folders import check_tokenizer_folder
    from rfad.models.rfnet import RFNet

    if config.separate_backbones:
        raise ValueError(f"--separate-backbones with --init {config.init}: the backbones are the init's (its "
                         "config's shared_backbone); drop one of the two")
    model = RFNet.from_pretrained(config.init)
    if model.config.image_size != config.image_size:
        raise ValueError(f"--init {config.init}: its image size is {model.config.image_size}, not --image-size "
                         f"{config.image_size}; pass --image-size {model.config.image_size}")
    model.config.ablate = list(config.ablate)
    tokenizer = AutoTokenizer.from_pretrained(check_tokenizer_folder(config.init, "RFNet caption tokenizer"),
                                              local_files_only=True)
    return model.train(), tokenizer


def build_map_models(config: RFNetTrainConfig) -> MapModels | None:
    """Depth/saliency models for rows without cached maps: ``--depth``/``--saliency`` when given,
    else with ``--tiny`` the zoo's tiny random DPT and U2-Net (seeded), else None."""
    from rfad.models.maps import DepthEstimator, SaliencyEstimator

    if (config.depth is None) != (config.saliency is None):
        raise ValueError("pass both --depth and --saliency (or neither)")
    if config.depth is not None:
        return MapModels(DepthEstimator.from_pretrained(config.depth), SaliencyEstimator.from_pretrained(config.saliency))
    if config.tiny:
        from rfad.tiny.zoo import build_tiny_u2net, tiny_dpt

        state = torch.get_rng_state()  # tiny_dpt reseeds the global RNG; keep the caller's stream
        maps = MapModels(DepthEstimator(tiny_dpt(config.seed), size=64).eval(),
                         SaliencyEstimator(build_tiny_u2net(config.seed), size=64).eval())
        torch.set_rng_state(state)
        return maps
    return None


@torch.no_grad()
def predict(model, dataset, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities float [N, 5], labels int64 [N]) of every sample of ``dataset``, in order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    probabilities, labels = [], []
    for batch in loader:
        logits = model(*(batch[name].to(device) for name in MODEL_INPUTS))
        probabilities.append(logits.float().softmax(-1).cpu())
        labels.append(batch["label"])
    model.train(was_training)
    return torch.cat(probabilities), torch.cat(labels)


# --- the output folder ----------------------------------------------------------------------


def save_final_model(model, tokenizer, out: Path, log: dict) -> None:
    """The RFNet folder (config.json, model.safetensors, tokenizer files, train_log.json), staged
    inside ``out`` and moved in file by file, so no file is ever half-written."""
    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / TRAIN_LOG).write_text(json.dumps(log, indent=2) + "\n")

    write_folder_atomically(out, write)


# --- the trainer ------------------------------------------------------------------------------


def train_rfnet(config: RFNetTrainConfig, echo=print) -> Path:
    """Train RFNet and write the folder ``config.out`` (see the module docstring); returns it."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config = config.resolved()
    out = Path(config.out)
    accelerator = Accelerator(cpu=several_cpu_processes(), mixed_precision=config.mixed_precision,
                              gradient_accumulation_steps=config.grad_accum, log_with="tensorboard",
                              project_dir=str(out / "logs"))
    main = accelerator.is_main_process
    say = echo if main else (lambda *_: None)
    world, rank = accelerator.num_processes, accelerator.process_index
    latest = checkpoint_to_resume(out, config.resume)
    set_seed(config.seed)

    # --- data and models ----------------------------------------------------------------------
    train_rows, root = load_split_rows(config.data, "train", say)
    train_rows = products_share(train_rows, config.train_fraction, config.seed)
    val_rows, _ = load_split_rows(config.data, "val", say)
    model, tokenizer = build_model_and_tokenizer(config)
    maps = build_map_models(config)
    if maps is None and any(row.depth is None or row.saliency is None for row in train_rows + val_rows):
        raise ValueError(f"--data {config.data}: some rows have no cached depth/saliency maps; run `rfad-data "
                         "prepare` first, or pass --depth DPT_DIR and --saliency U2NET (or --tiny)")
    dataset = {split: RFNetDataset(rows, root, tokenizer, config.image_size, model.config.max_caption_tokens, maps,
                                   config.product_scale)
               for split, rows in (("train", train_rows), ("val", val_rows))}
    samples_per_step = config.batch_size * config.grad_accum
    steps_per_epoch = len(train_rows) // world // samples_per_step
    if steps_per_epoch == 0:
        raise ValueError(f"--data {config.data}: {len(train_rows)} usable training rows are fewer than one step "
                         f"needs ({world} processes x batch size {config.batch_size} x grad-accum {config.grad_accum})")
    weights = class_weights(train_rows, config.class_weights)
    if weights is not None:
        weights = weights.to(accelerator.device)

    # --- optimiser, state, resume -------------------------------------------------------------
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    epoch, step, step_in_epoch, history, train_loss = 0, 0, 0, [], float("nan")
    earlier_seconds = 0.0  # training seconds of the calls before a resume: the log reports the run's total
    if config.resume:
        state = read_checkpoint_state(latest)
        if state.get("processes") != world or state.get("samples_per_step") != samples_per_step:
            raise ValueError(f"--resume: {latest} was written by {state.get('processes')} processes with "
                             f"{state.get('samples_per_step')} samples per step; resume with the same numbers")
        # Another placement of I_o would change the data under the run half-way. A checkpoint written
        # before checkpoints recorded the scale was trained at the default, the only scale there was.
        trained_at = state.get("product_scale")
        if trained_at is None:
            trained_at = DEFAULTS.product_scale
            say(f"{latest} records no product scale (written before --product-scale): it was trained at the "
                f"default, {trained_at}")
        if trained_at != config.product_scale:
            raise ValueError(f"--resume: {latest} was trained with --product-scale {trained_at}, not "
                             f"{config.product_scale}; resume with the same scale")
        load_checkpoint(accelerator, latest)  # verified; weights, optimizer, RNG states, accumulation counter
        epoch, step, step_in_epoch, history = state["epoch"], state["step"], state["step_in_epoch"], state["history"]
        train_loss, earlier_seconds = state["train_loss"], state.get("seconds", 0.0)
        say(f"resuming from {latest} (epoch {epoch + 1}, step {step})")
    # TensorBoard's hparams take scalars and strings only: --ablate goes in as "depth,filter".
    accelerator.init_trackers("rfnet", config={k: ",".join(v) if isinstance(v, (tuple, list)) else v
                                               for k, v in asdict(config).items() if v is not None})

    started = time.perf_counter()

    def seconds() -> float:  # not rounded: a one-step run takes well under 0.1 s on a fast machine
        return earlier_seconds + time.perf_counter() - started

    def checkpoint() -> None:
        state = {"epoch": epoch, "step_in_epoch": step_in_epoch, "train_loss": train_loss, "history": history,
                 "processes": world, "samples_per_step": samples_per_step, "product_scale": config.product_scale,
                 "seconds": seconds()}
        save_checkpoint(accelerator, out, step, state, config.keep_checkpoints)

    # --- the loop -----------------------------------------------------------------------------
    model.train()
    progress = tqdm(total=steps_per_epoch * config.epochs, initial=step, unit="step", desc="rfnet", disable=not main)
    while epoch < config.epochs:
        lr = config.lr * (0.1 if epoch >= config.lr_step_epoch else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = epoch_order(len(train_rows), config.seed, epoch, rank, world, steps_per_epoch * samples_per_step)
        # Skip what a resumed run already did; the loader's own generator keeps the global RNG untouched.
        loader = torch.utils.data.DataLoader(dataset["train"], batch_size=config.batch_size,
                                             sampler=order[step_in_epoch * samples_per_step:],
                                             generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        for batch in loader:
            with accelerator.accumulate(model):
                logits = model(*(batch[name].to(accelerator.device) for name in MODEL_INPUTS))
                loss = F.cross_entropy(logits.float(), batch["label"].to(accelerator.device), weight=weights)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            step_in_epoch += 1
            train_loss = loss.item()  # this process's last micro-batch: a progress signal, not an average
            progress.update(1)
            progress.set_postfix(loss=f"{train_loss:.3f}", epoch=epoch + 1)
            accelerator.log({"train/loss": train_loss, "train/lr": lr}, step=step)
            if config.checkpoint_steps and step % config.checkpoint_steps == 0 and step_in_epoch < steps_per_epoch:
                checkpoint()
            if config.max_steps and step >= config.max_steps:
                checkpoint()
                progress.close()
                say(f"stopped after {step} steps (--max-steps); continue with --resume")
                accelerator.end_training()
                return out

        record = {"epoch": epoch + 1, "step": step, "lr": lr, "train_loss": train_loss}
        if val_rows:
            probabilities, labels = predict(model, dataset["val"], config.batch_size, accelerator.device)
            record["val_accuracy"] = int((probabilities.argmax(-1) == labels).sum()) / len(labels)
            accelerator.log({"val/accuracy": record["val_accuracy"]}, step=step)
        history.append(record)
        with tqdm.external_write_mode():  # the line goes above the progress bar, not into it
            say(f"epoch {epoch + 1}/{config.epochs}: step {step}, lr {lr:.3g}, train loss "
                f"{record['train_loss']:.4f}" + (f", val accuracy {record['val_accuracy']:.4f}" if val_rows else ""))
        epoch, step_in_epoch = epoch + 1, 0
        checkpoint()
    progress.close()

    if main:
        best = max(history, key=lambda r: r.get("val_accuracy", -1.0)) if val_rows else None
        log = {"config": asdict(config), "history": history, "final_model": "last epoch",
               "best_val_epoch": best["epoch"] if best else None, "train_seconds": seconds()}
        save_final_model(accelerator.unwrap_model(model), tokenizer, out, log)
        say(f"RFNet (last epoch) written to {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and the process group: nothing distributed after it
    return out
