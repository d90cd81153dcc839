"""How fast the miniature world's generator could train here: one training step of each candidate model.

    python -m benchmarks.studies.miniworld.generator_step [--repeats 5]

Times one AdamW step (forward, loss, backward, update) at 128 px on this machine's CPU for the
candidate sizes of the tiny VAE (diffusers AutoencoderKL, factor 8), the tiny 4-channel UNet
(UNet2DConditionModel, 16 x 16 latents, cross-attention on 77 x 32 text states, as the tiny CLIP
gives) and its ControlNet (trained with the UNet frozen). Random weights and inputs: the time
of a step does not depend on them. Writes benchmarks/results/miniworld_step.json; the plan in
docs/miniworld.md is rendered from it by benchmarks/studies/miniworld/report.py.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import write_results

from rfad.tiny.shapes import tiny_shape
from rfad.tiny.tokenizers import build_clip_tokenizer
from rfad.tiny.zoo import (
    CROSS_ATTENTION_DIM, tiny_controlnet, tiny_text_encoder, tiny_unet, tiny_vae,
)

SIDE, LATENT, TEXT_LENGTH = 128, 16, 77
# (block channels, image side, batch): the VAE is fully convolutional, so it can train on crops.
VAE_RUNS = (((32, 32, 64, 64), SIDE, 8), ((32, 32, 64, 64), 64, 16), ((64, 64, 128, 128), SIDE, 8))
UNET_CHANNELS = ((32, 64), (64, 128), (32, 64, 128))


def _size(module: torch.nn.Module) -> tuple[float, float]:
    """(parameters in millions, fp32 weight size in MB)."""
    count = sum(p.numel() for p in module.parameters())
    return count / 1e6, count * 4 / 1e6


def _time_steps(step, parameters, repeats: int) -> float:
    optimiser = torch.optim.AdamW(parameters, lr=1e-4)
    times = []
    for i in range(repeats + 2):  # two warm-up steps
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        step().backward()
        optimiser.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def vae_row(channels, side: int, batch: int, repeats: int) -> dict:
    vae = tiny_vae(0, tiny_shape(vae_channels=channels)).train()
    images = torch.rand(batch, 3, side, side) * 2 - 1

    def step():
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return torch.nn.functional.mse_loss(recon, images) + 1e-6 * posterior.kl().mean()

    seconds = _time_steps(step, vae.parameters(), repeats)
    params, mb = _size(vae)
    return {"component": "vae", "channels": str(channels), "side": side, "batch": batch, "params_m": params, "size_mb": mb,
            "step_s": seconds, "samples_per_s": batch / seconds}


def unet_rows(channels, batch: int, repeats: int) -> list[dict]:
    spec = tiny_shape(unet_channels=channels, sample_size=LATENT)
    unet = tiny_unet(4, 0, spec).train()
    latents, noise = torch.randn(batch, 4, LATENT, LATENT), torch.randn(batch, 4, LATENT, LATENT)
    timesteps = torch.randint(0, 1000, (batch,))
    text = torch.randn(batch, TEXT_LENGTH, CROSS_ATTENTION_DIM)

    def unet_step():
        return torch.nn.functional.mse_loss(unet(latents, timesteps, text).sample, noise)

    rows = []
    seconds = _time_steps(unet_step, unet.parameters(), repeats)
    params, mb = _size(unet)
    rows.append({"component": "unet", "channels": str(channels), "side": SIDE, "batch": batch, "params_m": params, "size_mb": mb,
                 "step_s": seconds, "samples_per_s": batch / seconds})

    controlnet = tiny_controlnet(unet, 0, spec).train()
    unet.requires_grad_(False)
    control = torch.rand(batch, 3, SIDE, SIDE)

    def controlnet_step():
        down, mid = controlnet(latents, timesteps, text, controlnet_cond=control, return_dict=False)
        predicted = unet(latents, timesteps, text, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
        return torch.nn.functional.mse_loss(predicted, noise)

    seconds = _time_steps(controlnet_step, controlnet.parameters(), repeats)
    params, mb = _size(controlnet)
    rows.append({"component": "controlnet (UNet frozen)", "channels": str(channels), "side": SIDE, "batch": batch,
                 "params_m": params, "size_mb": mb, "step_s": seconds, "samples_per_s": batch / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--unet-batch", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for channels, side, batch in VAE_RUNS:
        rows.append(vae_row(channels, side, batch, args.repeats))
        print(rows[-1], flush=True)
    for channels in UNET_CHANNELS:
        rows += unet_rows(channels, args.unet_batch, args.repeats)
        print(*rows[-2:], sep="\n", flush=True)
    # The text encoder is the zoo's tiny CLIP, frozen: only its size counts against the weight budget.
    text_params, text_mb = _size(tiny_text_encoder(build_clip_tokenizer()))
    path = write_results("miniworld_step", rows, {"side": SIDE, "latent": LATENT, "text_length": TEXT_LENGTH,
                                                  "repeats": args.repeats, "threads": torch.get_num_threads(),
                                                  "text_encoder_params_m": text_params, "text_encoder_mb": text_mb})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
