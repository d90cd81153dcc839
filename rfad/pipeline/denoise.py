"""One attempt: K candidates denoised together with DDIM + classifier-free guidance + ControlNet.

Follows diffusers' ``StableDiffusionControlNetInpaintPipeline`` step for step (strength 1):
the random draws per candidate happen in the same order from a generator seeded with the
candidate's seed (init-image latent sample for a 4-channel UNet, initial noise, masked-image
latent sample for a 9-channel UNet), so the same weights and seed give the same image.
Candidates of one attempt run as one batch of 2K (negative prompt first, then the prompt).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from rfad.pipeline.request import PreparedRequest
from rfad.pipeline.runner import ComponentRunner
from rfad.pipeline.settings import GenerationSettings


class GenerationCancelled(RuntimeError):
    """Raised between denoising steps when the caller's ``should_stop`` says so."""


def make_scheduler(scheduler_config: dict):
    """A fresh DDIM scheduler (schedulers hold per-request state) from the base model's config."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler_config)


def _sample(dist: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    mean, std = dist
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + std * noise


def initial_draws(runner: ComponentRunner, prepared: PreparedRequest, seeds: Sequence[int],
                  latents: torch.Tensor | None = None):
    """Per-candidate random draws, in diffusers' order. Returns (noise [K,4,h,w], image latents or None,
    masked-image latents or None). ``latents``, if given, replaces the drawn initial noise."""
    info = runner.info
    _, _, h, w = prepared.mask_latent.shape
    shape = (1, info.latent_channels, h, w)
    noises, image_latents, masked_latents = [], [], []
    for k, seed in enumerate(seeds):
        generator = torch.Generator("cpu").manual_seed(int(seed))
        if prepared.image_latent_dist is not None:
            image_latents.append(_sample(prepared.image_latent_dist, generator))
        if latents is None:
            noises.append(torch.randn(shape, generator=generator, dtype=runner.dtype).to(runner.device))
        else:
            noises.append(latents[k : k + 1].to(runner.device, runner.dtype))
        if prepared.masked_latent_dist is not None:
            masked_latents.append(_sample(prepared.masked_latent_dist, generator))
    cat = lambda items: torch.cat(items) if items else None  # noqa: E731
    return cat(noises), cat(image_latents), cat(masked_latents)


def denoise(runner: ComponentRunner, prepared: PreparedRequest, seeds: Sequence[int], settings: GenerationSettings,
            latents: torch.Tensor | None = None, on_step: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Denoise ``len(seeds)`` candidates; returns decoded images float [K, 3, H, W] in about [-1, 1].

    ``on_step(i, steps)`` is called after each step (progress bars); ``should_stop()`` is checked
    before each step and raises :class:`GenerationCancelled` when true.
    """
    k = len(seeds)
    scheduler = make_scheduler(runner.info.scheduler_config)
    scheduler.set_timesteps(settings.steps, device=runner.device)
    timesteps = scheduler.timesteps
    noise, image_latents, masked_latents = initial_draws(runner, prepared, seeds, latents)
    latents = noise * scheduler.init_noise_sigma

    copies = 2 if settings.do_cfg else 1
    embeddings = prepared.text_embeddings if settings.do_cfg else prepared.text_embeddings[1:]
    embeddings = embeddings.repeat_interleave(k, dim=0)  # [uncond x K, cond x K]
    control = prepared.control.expand(copies * k, -1, -1, -1)
    unet_extra = None
    if masked_latents is not None:
        mask = prepared.mask_latent.expand(k, -1, -1, -1)
        unet_extra = torch.cat([mask, masked_latents], dim=1).repeat(copies, 1, 1, 1)
    blend_mask = prepared.mask_latent if image_latents is not None else None

    with torch.no_grad():
        for i, t in enumerate(timesteps):
            if should_stop is not None and should_stop():
                raise GenerationCancelled(f"cancelled before step {i + 1} of {len(timesteps)}")
            model_input = scheduler.scale_model_input(torch.cat([latents] * copies), t)
            noise_pred = runner.predict_noise(
                model_input, unet_extra, t.expand(copies * k), embeddings, control, settings.controlnet_scale
            )
            if settings.do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + settings.guidance_scale * (cond - uncond)
            variance_noise = _variance_noise(latents, seeds, i) if settings.eta > 0 else None
            latents = scheduler.step(noise_pred, t, latents, eta=settings.eta, variance_noise=variance_noise).prev_sample
            if blend_mask is not None:
                # 4-channel UNet: keep the product region on the init image's trajectory, noised
                # to the next step's level, as diffusers' ControlNet inpaint pipeline does.
                proper = image_latents
                if i < len(timesteps) - 1:
                    proper = scheduler.add_noise(image_latents, noise, timesteps[i + 1 : i + 2])
                latents = (1 - blend_mask) * proper + blend_mask * latents
            if on_step is not None:
                on_step(i + 1, len(timesteps))
        return runner.vae_decoder(latents)


def _variance_noise(latents: torch.Tensor, seeds: Sequence[int], step: int) -> torch.Tensor:
    """DDIM eta > 0 noise, per candidate and step from its own seed, so a candidate does not depend on its batch."""
    draws = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed((int(seed) * 1_000_003 + step + 1) % (2**63))
        draws.append(torch.randn((1, *latents.shape[1:]), generator=generator, dtype=latents.dtype))
    return torch.cat(draws).to(latents.device)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [K, 3, H, W] in [-1, 1] -> uint8 [K, H, W, 3], rounded as diffusers' postprocess does."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
