"""``rfad-train decoder``: fine-tune a miniature-world generator's VAE decoder, the encoder frozen.

The decoder is the last thing every generated image goes through. The shipped generator's VAE
was trained for 800 steps, its L1 loss still falling (training_record.json), and its decoder
blurs small parts and shifts colours: the oracle, reading its reconstructions of drawn scenes,
agreed with the drawn class only 52-65 % of the time for Shape Hallucination and Size Mismatch.
With the encoder (and ``quant_conv``) frozen, the latents the UNet and ControlNet were trained on
do not change, so the diffusion models stay valid: only what those latents decode to gets sharper.

config -> the generator's own training scenes (its record's seed, count and class mix) -> L1 on
crops from the latent means (AdamW, warm-up, cosine: the generator's optimiser) -> the oracle on
reconstructions before and after (the generator's acceptance check) -> the set written to
``--out`` with ``training_record.json`` extended by a ``decoder_finetune`` section and every file's
SHA-256 recomputed.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rfad.miniworld import RECORD_FILE, file_hashes, training_record
from rfad.trainer.data.scenes import class_mix
from rfad.trainer.miniworld.bank import draw_scene_bank
from rfad.trainer.miniworld.schedule import make_optimiser
from rfad.trainer.miniworld.vae import images_to_tensor, reconstruction_agreement


@dataclass
class DecoderTrainConfig:
    models: str
    out: str
    steps: int = 1500
    batch: int = 16
    crop: int = 64
    lr: float = 5e-4
    check_per_class: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crop % 8 or self.crop < 8:
            raise ValueError(f"--crop {self.crop}: must be a positive multiple of 8 (the VAE's factor)")
        for name in ("steps", "batch", "check_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")


def finetune_decoder(vae, images: np.ndarray, config: DecoderTrainConfig, log: Callable[[int, float], None]):
    """Train ``vae``'s decoder and ``post_quant_conv`` (in place) on random crops of ``images`` (uint8 [N, H, W, 3]):
    L1 between the crop and the decoding of its latent mean; the encoder and ``quant_conv`` never change."""
    side = images.shape[1]
    frozen = list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
    for parameter in frozen:
        parameter.requires_grad_(False)
    trained = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimiser, scheduler = make_optimiser(trained, config.lr, config.steps, weight_decay=0.0)
    rng = np.random.default_rng([config.seed, 2])
    vae.train()
    for step in range(config.steps):
        picks = rng.integers(len(images), size=config.batch)
        x0, y0 = rng.integers(side - config.crop + 1, size=2)
        crops = images[picks, y0:y0 + config.crop, x0:x0 + config.crop]
        flips = rng.random(config.batch) < 0.5
        target = images_to_tensor(np.where(flips[:, None, None, None], crops[:, :, ::-1], crops))
        with torch.no_grad():
            latents = vae.encode(target).latent_dist.mean
        loss = (vae.decode(latents).sample - target).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        log(step, loss.item())
    for parameter in frozen:
        parameter.requires_grad_(True)
    return vae.eval()


def train_decoder(config: DecoderTrainConfig, echo: Callable[[str], None] = print) -> dict:
    """Fine-tune the decoder of the set ``config.models`` into ``config.out``; returns the new record section."""
    from diffusers import AutoencoderKL

    source, out = Path(config.models), Path(config.out)
    record = training_record(source)
    settings = record["settings"]
    if out.resolve() != source.resolve():
        if out.exists():
            raise ValueError(f"--out {out}: exists; give a new folder (the set is copied there, then changed)")
        shutil.copytree(source, out)
    vae_dir = out / "sd15" / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    echo(f"drawing the generator's {settings['scenes']} training scenes (seed {settings['seed']})")
    scenes = draw_scene_bank(settings["scenes"], class_mix(settings["available_share"]), settings["seed"],
                             progress=True)
    before = reconstruction_agreement(vae, config.check_per_class, config.seed)
    echo("oracle agreement on reconstructions before: " + _shares(before))
    curve, window, start = [], [], time.perf_counter()

    def log(step: int, loss: float) -> None:
        window.append(loss)
        if (step + 1) % 50 == 0 or step + 1 == config.steps:
            curve.append({"step": step + 1, "loss": round(float(np.mean(window)), 6)})
            window.clear()
            if (step + 1) % 250 == 0 or step + 1 == config.steps:
                echo(f"  decoder step {step + 1}/{config.steps}  loss {curve[-1]['loss']:.4f}  "
                     f"{time.perf_counter() - start:.0f} s")

    torch.manual_seed(config.seed)
    finetune_decoder(vae, scenes.images, config, log)
    seconds = round(time.perf_counter() - start, 1)
    after = reconstruction_agreement(vae, config.check_per_class, config.seed)
    echo("oracle agreement on reconstructions after: " + _shares(after))
    vae.save_pretrained(vae_dir, safe_serialization=True)
    section = {"config": asdict(config), "losses": curve, "seconds": seconds,
               "reconstruction_check": {"before": before, "after": after}}
    record["decoder_finetune"] = section
    record["files"] = file_hashes(out)
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return section


def _shares(check: dict) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in check["per_class"].items())
