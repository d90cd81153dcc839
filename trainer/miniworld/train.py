"""``rfad-train miniworld``: train the miniature world's generator, top to bottom, in resumable phases.

config -> scenes (drawn, seeded) -> VAE on crops -> the VAE's reconstructions labelled by the
oracle (the acceptance check of docs/miniworld.md) -> latents encoded once -> UNet (+ text
encoder) on the cached latents -> ControlNet from that UNet -> the model set folder
(``sd15/`` in the diffusers SD-1.5 layout, ``controlnet/``, ``rfad-models.json``) and
``training_record.json`` (settings, seed, losses, times, SHA-256 of every file). The VAE and UNet
phases are kept in ``OUT.stages`` as they finish (:mod:`rfad.trainer.miniworld.stages`), the phase
in progress is checkpointed there every ``--checkpoint-every`` steps
(:mod:`rfad.trainer.miniworld.progress`): a stopped run resumes where it stopped, and
``--stop-after`` splits a run into parts.

Seeded end to end: the same config on the same machine and library versions gives the same
weights (every random draw comes from a generator seeded from ``seed``; CPU kernels are
deterministic at a fixed thread count).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rfad.miniworld import RECORD_FILE, file_hashes
from rfad.miniworld.canvas import MINIWORLD_CANVAS
from rfad.models.model_set import ModelSet
from rfad.tiny.tokenizers import build_clip_tokenizer
from rfad.tiny.zoo import save_sd_folder, tiny_text_encoder
from rfad.trainer.checkpoints import write_folder_atomically
from rfad.trainer.data.scenes import class_mix
from rfad.trainer.miniworld.bank import draw_scene_bank
from rfad.trainer.miniworld.config import MiniworldTrainConfig
from rfad.trainer.miniworld.diffusion import LatentBank, train_controlnet, train_unet
from rfad.trainer.miniworld.progress import PhaseCheckpoints, PhaseRun
from rfad.trainer.miniworld.stages import StageStore
from rfad.trainer.miniworld.vae import encode_images, reconstruction_agreement, set_scaling_factor, train_vae


class LossLog:
    """Per phase: the mean of every ``every`` steps' losses, and the wall time."""

    def __init__(self, every: int, echo: Callable[[str], None]):
        self.every, self.echo = every, echo
        self.phases: dict[str, dict] = {}

    def phase(self, name: str, steps: int) -> Callable[[int, dict], None]:
        record = self.phases.setdefault(name, {"steps": steps, "curve": [], "started": time.perf_counter()})
        window: dict[str, list[float]] = {}

        def log(step: int, losses: dict) -> None:
            for key, value in losses.items():
                window.setdefault(key, []).append(value)
            if (step + 1) % self.every == 0 or step + 1 == steps:
                means = {key: round(float(np.mean(values)), 6) for key, values in window.items()}
                record["curve"].append({"step": step + 1, **means})
                window.clear()
                elapsed = time.perf_counter() - record["started"]
                if (step + 1) % (self.every * 10) == 0 or step + 1 == steps:
                    self.echo(f"  {name} step {step + 1}/{steps}  loss {means['loss']:.4f}  {elapsed:.0f} s")

        return log

    def run(self, name: str, steps: int, checkpoints: PhaseCheckpoints | None = None) -> PhaseRun:
        """Phase ``name``'s loop bookkeeping: this log, and ``checkpoints`` that keep (and restore) its curve."""
        def snapshot() -> dict:
            record = self.phases[name]
            return {"curve": record["curve"], "seconds": round(time.perf_counter() - record["started"], 1)}

        def restore(kept: dict) -> None:
            record = self.phases[name]
            record["curve"] = kept["curve"]
            record["started"] = time.perf_counter() - kept["seconds"]  # the phase's time as if it had not stopped

        return PhaseRun(self.phase(name, steps), checkpoints, snapshot, restore)

    def finish(self, name: str) -> None:
        record = self.phases[name]
        record["seconds"] = round(time.perf_counter() - record.pop("started"), 1)


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _kept_seconds(resumed: list[str], losses: LossLog) -> float:
    """Seconds the phases loaded from their stages took when they were trained (a kept VAE is checked again
    in this call, so its check is in this call's time)."""
    return sum(losses.phases[name]["seconds"] for name in resumed)


def _checked(vae, config: MiniworldTrainConfig, timings: dict, echo: Callable[[str], None]) -> dict:
    """The oracle on the VAE's reconstructions (reconstruction_agreement), timed into ``timings``."""
    t0 = time.perf_counter()
    check = reconstruction_agreement(vae, config.check_per_class, config.seed)
    timings["vae_check_s"] = round(time.perf_counter() - t0, 1)
    echo("  oracle agreement on reconstructions: "
         + ", ".join(f"{name} {share:.0%}" for name, share in check["per_class"].items()))
    return check


def _vae_phase(config: MiniworldTrainConfig, scenes, losses: LossLog, stages: StageStore, timings: dict,
               resumed: list[str], echo: Callable[[str], None]):
    """The VAE, trained on crops and checked by the oracle on its reconstructions, or loaded from its kept stage.

    Returns (vae in eval mode, the reconstruction check)."""
    from diffusers import AutoencoderKL

    if kept := stages.load("vae"):
        folder, record = kept
        echo(f"VAE: kept in {folder}, loaded")
        losses.phases["vae"] = record["losses"]
        resumed.append("vae")
        vae = stages.load_model(AutoencoderKL, folder / "vae").eval()
        # Checked again, not read from the stage: the oracle's rules may have changed since the stage was
        # kept (a factor-4 VAE kept before the reference rule changed was recorded at 64 % Size Mismatch
        # agreement, 97 % under the rules it was shipped with).
        return vae, _checked(vae, config, timings, echo)

    echo(f"VAE: {config.vae_steps} steps on {config.vae_crop} px crops (factor {config.latent_factor})")
    progress = stages.in_progress("vae", config.checkpoint_every, echo)
    vae = train_vae(scenes.images, config.vae_steps, config.vae_batch, config.vae_crop, config.vae_lr, config.seed,
                    tuple(config.vae_channels), config.norm_groups, losses.run("vae", config.vae_steps, progress))
    losses.finish("vae")
    check = _checked(vae, config, timings, echo)
    stages.save("vae", {"vae": vae}, {"losses": losses.phases["vae"], "reconstruction_check": check,
                                      "vae_check_s": timings["vae_check_s"]})
    progress.clear()
    return vae, check


def _unet_phase(config: MiniworldTrainConfig, bank: LatentBank, tokenizer, common: dict, losses: LossLog,
                stages: StageStore, resumed: list[str], echo: Callable[[str], None]):
    """The UNet and the text encoder trained beside it, or both loaded from their kept stage.

    Returns (unet, text_encoder), both in eval mode."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    if kept := stages.load("unet"):
        folder, record = kept
        echo(f"UNet: kept in {folder}, loaded")
        losses.phases["unet"] = record["losses"]
        resumed.append("unet")
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval().requires_grad_(False)
        return stages.load_model(UNet2DConditionModel, folder / "unet").eval(), text_encoder

    text_encoder = tiny_text_encoder(tokenizer, config.seed)
    echo(f"UNet: {config.unet_steps} steps (text encoder {config.text_encoder})")
    progress = stages.in_progress("unet", config.checkpoint_every, echo)
    unet = train_unet(bank, text_encoder, steps=config.unet_steps, batch=config.unet_batch, lr=config.unet_lr,
                      train_text_encoder=config.text_encoder == "train", channels=tuple(config.unet_channels),
                      norm_groups=config.norm_groups, run=losses.run("unet", config.unet_steps, progress), **common)
    losses.finish("unet")
    stages.save("unet", {"unet": unet, "text_encoder": text_encoder}, {"losses": losses.phases["unet"]})
    progress.clear()
    return unet, text_encoder


def train_miniworld(config: MiniworldTrainConfig, echo: Callable[[str], None] = print) -> dict | None:
    """Train the three models and write ``config.out``; returns the training record.

    Finished phases are kept in ``OUT.stages`` (:mod:`rfad.trainer.miniworld.stages`) and loaded
    instead of trained when the command runs again; with ``config.stop_after`` set, the run stops
    after that phase is kept and returns None.
    """
    start = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if config.threads:
        torch.set_num_threads(config.threads)
    losses = LossLog(config.log_every, echo)
    stages = StageStore(config)
    timings, resumed = {}, []

    echo(f"drawing {config.scenes} scenes (Available share {config.available_share})")
    t0 = time.perf_counter()
    scenes = draw_scene_bank(config.scenes, class_mix(config.available_share), config.seed, progress=True)
    timings["draw_scenes_s"] = round(time.perf_counter() - t0, 1)

    vae, check = _vae_phase(config, scenes, losses, stages, timings, resumed, echo)
    if config.stop_after == "vae":
        echo(f"stopped after the VAE; the same command resumes from {stages.folder}")
        return None

    t0 = time.perf_counter()
    mean, std = encode_images(vae, scenes.images)
    scaling_factor = set_scaling_factor(vae, mean, std)
    timings["encode_s"] = round(time.perf_counter() - t0, 1)
    echo(f"encoded {len(scenes)} scenes in {timings['encode_s']} s; scaling factor {scaling_factor:.4f}")

    tokenizer = build_clip_tokenizer()
    tokens = lambda texts: tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,  # noqa: E731
                                     truncation=True, return_tensors="pt").input_ids
    bank = LatentBank(mean=mean, std=std, scaling_factor=scaling_factor, input_ids=tokens(scenes.prompts),
                      empty_ids=tokens([""])[0], controls=scenes.controls)
    common = {"uncond_prob": config.uncond_prob, "snr_gamma": config.snr_gamma, "seed": config.seed}

    unet, text_encoder = _unet_phase(config, bank, tokenizer, common, losses, stages, resumed, echo)
    if config.stop_after == "unet":
        echo(f"stopped after the UNet; the same command resumes from {stages.folder}")
        return None

    echo(f"ControlNet: {config.controlnet_steps} steps (UNet frozen)")
    progress = stages.in_progress("controlnet", config.checkpoint_every, echo)
    controlnet = train_controlnet(bank, unet, text_encoder, steps=config.controlnet_steps,
                                  batch=config.controlnet_batch, lr=config.controlnet_lr,
                                  run=losses.run("controlnet", config.controlnet_steps, progress), **common)
    losses.finish("controlnet")

    out = Path(config.out)

    def write(folder: Path) -> None:
        save_sd_folder(folder / "sd15", tokenizer, text_encoder, unet, vae)
        controlnet.save_pretrained(folder / "controlnet", safe_serialization=True)
        ModelSet(sd=folder / "sd15", controlnet=folder / "controlnet").write(
            folder, description="rfad miniature-world generator (rfad-train miniworld; 128 px scenes, "
                                f"canvas {MINIWORLD_CANVAS.width} px, product_scale {MINIWORLD_CANVAS.product_scale})")

    write_folder_atomically(out, write)
    files = file_hashes(out)
    record = {
        "command": config.command,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items() if k != "command"},
        "seed": config.seed,
        "started": started_at,
        # A resumed run's total as if uninterrupted: this call's time plus the kept phases' recorded times.
        "wall_minutes": round((time.perf_counter() - start + _kept_seconds(resumed, losses)) / 60, 2),
        "timings_s": {**timings, **{f"{name}_s": phase["seconds"] for name, phase in losses.phases.items()}},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "diffusers": __import__("diffusers").__version__},
        "scenes": {"n": len(scenes), "labels": scenes.label_counts()},
        "resumed_phases": resumed,
        "vae": {"scaling_factor": round(scaling_factor, 6), "latent_factor": config.latent_factor,
                "reconstruction_check": check,
                "parameters": _parameters(vae)},
        "parameters": {"vae": _parameters(vae), "unet": _parameters(unet), "controlnet": _parameters(controlnet),
                       "text_encoder": _parameters(text_encoder)},
        "losses": losses.phases,
        "files": files,
        "weights_mb": round(sum(f["bytes"] for f in files.values()) / 1e6, 2),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    stages.remove()
    echo(f"wrote {out} ({record['weights_mb']} MB) in {record['wall_minutes']} min")
    return record
