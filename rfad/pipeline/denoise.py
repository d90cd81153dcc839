"""One attempt: K candidates denoised together with DDIM + classifier-free guidance + ControlNet.

Follows diffusers' ``StableDiffusionControlNetInpaintPipeline`` step for step (strength 1):
the random draws per candidate happen in the same order from a generator seeded with the
candidate's seed (init-image latent sample for a 4-channel UNet, initial noise, masked-image
latent sample for a 9-channel UNet), so the same weights and seed give the same image.
Candidates of one attempt run as one batch of 2K (negative prompt first, then the prompt).

The loop is written once and split where RFFT needs to enter it: :func:`start_denoising` (the
initial state), :func:`denoise_steps` (DDIM steps without gradient, optionally stopping at step
t*), :func:`guided_noise` (one ControlNet + UNet evaluation, differentiable when called outside
``no_grad``) and :func:`scheduler_step`. :func:`denoise` composes them for generation. Early
screening (:mod:`rfad.pipeline.screening`) denoises candidates at different steps in one batch:
:func:`guided_noise` takes a timestep per candidate, and :func:`select_rows` / :func:`replace_rows`
take candidates out of a batch and put fresh ones in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


@dataclass
class DenoisingBatch:
    """Candidates denoised together, and everything their steps read (all on the runner's device).

    Built once per attempt by :func:`start_denoising`; several requests' batches can be merged
    (:func:`merge_batches`, RFFT denoises one candidate per training row). K = candidates,
    ``copies`` = 2 under classifier-free guidance (negative prompt first, then the prompt), else 1.

    scheduler: the DDIM scheduler with its timesteps set; ``timesteps`` int64 [T] in order.
    seeds: K seeds (DDIM eta > 0 draws each candidate's variance noise from its own seed).
    latents: float [K, 4, h, w], x_T = initial noise * ``init_noise_sigma``.
    noise: float [K, 4, h, w], the initial noise (re-noises the init latents for blending).
    image_latents: float [K, 4, h, w] init-image latents (4-channel UNet: latent blending), else None.
    blend_mask: float [K, 1, h, w], 1 where the background is generated (4-channel UNet), else None.
    embeddings: float [copies*K, 77, D], the negative prompt's K rows first under CFG.
    control: float [copies*K, 3, H, W] in [0, 1], the control images.
    unet_extra: float [copies*K, 5, h, w], mask + masked-image latents (9-channel UNet), else None.
    """

    scheduler: object
    timesteps: torch.Tensor
    seeds: list[int]
    copies: int
    latents: torch.Tensor
    noise: torch.Tensor
    image_latents: torch.Tensor | None
    blend_mask: torch.Tensor | None
    embeddings: torch.Tensor
    control: torch.Tensor
    unet_extra: torch.Tensor | None


def start_denoising(runner: ComponentRunner, prepared: PreparedRequest, seeds: Sequence[int],
                    settings: GenerationSettings, latents: torch.Tensor | None = None) -> DenoisingBatch:
    """The initial state of ``len(seeds)`` candidates of one request (random draws in diffusers' order)."""
    k = len(seeds)
    scheduler = make_scheduler(runner.info.scheduler_config)
    scheduler.set_timesteps(settings.steps, device=runner.device)
    noise, image_latents, masked_latents = initial_draws(runner, prepared, seeds, latents)

    copies = 2 if settings.do_cfg else 1
    embeddings = prepared.text_embeddings if settings.do_cfg else prepared.text_embeddings[1:]
    unet_extra = None
    if masked_latents is not None:
        mask = prepared.mask_latent.expand(k, -1, -1, -1)
        unet_extra = torch.cat([mask, masked_latents], dim=1).repeat(copies, 1, 1, 1)
    return DenoisingBatch(
        scheduler=scheduler,
        timesteps=scheduler.timesteps,
        seeds=[int(s) for s in seeds],
        copies=copies,
        latents=noise * scheduler.init_noise_sigma,
        noise=noise,
        image_latents=image_latents,
        blend_mask=prepared.mask_latent.expand(k, -1, -1, -1) if image_latents is not None else None,
        embeddings=embeddings.repeat_interleave(k, dim=0),  # [uncond x K, cond x K]
        control=prepared.control.expand(copies * k, -1, -1, -1),
        unet_extra=unet_extra,
    )


def merge_batches(batches: Sequence[DenoisingBatch]) -> DenoisingBatch:
    """One batch of the candidates of several requests denoised with the same settings.

    The per-copy tensors keep the CFG layout (every request's negative-prompt rows, then every
    request's prompt rows), so :func:`guided_noise` splits them as it does for one request.
    """
    first = batches[0]
    for other in batches[1:]:
        if other.copies != first.copies or not torch.equal(other.timesteps, first.timesteps):
            raise ValueError("merge_batches: batches differ in guidance or timesteps; merge only equal settings")

    def per_candidate(name: str) -> torch.Tensor | None:
        values = [getattr(b, name) for b in batches]
        return None if values[0] is None else torch.cat(values)

    def per_copy(name: str) -> torch.Tensor | None:
        if getattr(first, name) is None:
            return None
        parts = [getattr(b, name).chunk(first.copies) for b in batches]
        return torch.cat([part[c] for c in range(first.copies) for part in parts])

    return DenoisingBatch(
        scheduler=first.scheduler, timesteps=first.timesteps, seeds=[s for b in batches for s in b.seeds],
        copies=first.copies, latents=per_candidate("latents"), noise=per_candidate("noise"),
        image_latents=per_candidate("image_latents"), blend_mask=per_candidate("blend_mask"),
        embeddings=per_copy("embeddings"), control=per_copy("control"), unet_extra=per_copy("unet_extra"),
    )


def guided_noise(runner: ComponentRunner, batch: DenoisingBatch, latents: torch.Tensor, t: torch.Tensor,
                 controlnet_scale: float) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One ControlNet + UNet evaluation of every candidate: latents float [K, 4, h, w] at timestep ``t``
    (one for all, or int64 [K], one per candidate) -> (eps_uncond [K, 4, h, w] or None without CFG,
    eps_cond [K, 4, h, w]).

    Not wrapped in ``no_grad``: generation calls it inside :func:`denoise_steps` (no gradient),
    RFFT calls it directly to differentiate one step through the ControlNet.
    """
    k = latents.shape[0]
    timesteps = t.expand(k).repeat(batch.copies)  # [copies * K], in the CFG layout of the batch
    # DDIM's scale_model_input is the identity; it is called for schedulers that scale per step.
    model_input = batch.scheduler.scale_model_input(torch.cat([latents] * batch.copies), t)
    noise_pred = runner.predict_noise(model_input, batch.unet_extra, timesteps, batch.embeddings,
                                      batch.control, controlnet_scale)
    if batch.copies == 1:
        return None, noise_pred
    uncond, cond = noise_pred.chunk(2)
    return uncond, cond


def combine_guidance(uncond: torch.Tensor | None, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps~ = eps(0) + w (eps(c) - eps(0)); ``cond`` alone without CFG."""
    return cond if uncond is None else uncond + guidance_scale * (cond - uncond)


def scheduler_step(batch: DenoisingBatch, i: int, noise_pred: torch.Tensor, latents: torch.Tensor,
                   eta: float = 0.0) -> torch.Tensor:
    """DDIM step ``i`` (latents at ``timesteps[i]`` -> the next step's), with latent blending for a 4-channel UNet."""
    return scheduler_step_x0(batch, i, noise_pred, latents, eta)[0]


def scheduler_step_x0(batch: DenoisingBatch, i: int, noise_pred: torch.Tensor, latents: torch.Tensor,
                      eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`scheduler_step`, and the scheduler's x0-prediction at step ``i`` (the clean latents
    float [K, 4, h, w] it predicts from ``noise_pred``: what early screening decodes and judges)."""
    timesteps, scheduler = batch.timesteps, batch.scheduler
    variance_noise = _variance_noise(latents, batch.seeds, i) if eta > 0 else None
    out = scheduler.step(noise_pred, timesteps[i], latents, eta=eta, variance_noise=variance_noise)
    latents, x0 = out.prev_sample, out.pred_original_sample
    if batch.blend_mask is not None:
        # 4-channel UNet: keep the product region on the init image's trajectory, noised
        # to the next step's level, as diffusers' ControlNet inpaint pipeline does.
        proper = batch.image_latents
        if i < len(timesteps) - 1:
            proper = scheduler.add_noise(batch.image_latents, batch.noise, timesteps[i + 1 : i + 2])
        latents = (1 - batch.blend_mask) * proper + batch.blend_mask * latents
    return latents, x0


def select_rows(batch: DenoisingBatch, rows: Sequence[int]) -> DenoisingBatch:
    """The candidates ``rows`` of ``batch`` (in that order) as a batch of their own; the per-copy
    tensors keep the CFG layout (every negative-prompt row, then every prompt row)."""
    index = torch.as_tensor(list(rows), dtype=torch.long, device=batch.latents.device)
    k = batch.latents.shape[0]
    copy_index = torch.cat([index + c * k for c in range(batch.copies)])

    def pick(tensor: torch.Tensor | None, per_copy: bool = False) -> torch.Tensor | None:
        if tensor is None:
            return None
        chosen = copy_index if per_copy else index
        if tensor.stride(0) == 0:  # one row expanded (the control image, the mask): stays a view, no copy
            return tensor[:1].expand(len(chosen), *tensor.shape[1:])
        return tensor[chosen]

    return replace(batch, seeds=[batch.seeds[r] for r in rows], latents=pick(batch.latents), noise=pick(batch.noise),
                   image_latents=pick(batch.image_latents), blend_mask=pick(batch.blend_mask),
                   embeddings=pick(batch.embeddings, True), control=pick(batch.control, True),
                   unet_extra=pick(batch.unet_extra, True))


def replace_rows(batch: DenoisingBatch, rows: Sequence[int], fresh: DenoisingBatch) -> DenoisingBatch:
    """``batch`` with candidate ``rows[j]`` replaced by candidate ``j`` of ``fresh`` (another
    :func:`start_denoising` of the same request and settings: same timesteps, embeddings and control).

    Only the per-candidate draws change; the request's constants (text embeddings, control image)
    stay the same tensors, so a runner that sends constants once (the Triton runner) keeps them.
    """
    if len(rows) != len(fresh.seeds):
        raise ValueError(f"replace_rows: {len(rows)} rows, {len(fresh.seeds)} fresh candidates")
    k = batch.latents.shape[0]
    index = torch.as_tensor(list(rows), dtype=torch.long, device=batch.latents.device)

    def put(tensor: torch.Tensor | None, new: torch.Tensor | None, per_copy: bool = False) -> torch.Tensor | None:
        if tensor is None:
            return None
        tensor = tensor.clone()
        if per_copy:
            for c in range(batch.copies):
                tensor[index + c * k] = new.chunk(batch.copies)[c]
        else:
            tensor[index] = new
        return tensor

    seeds = list(batch.seeds)
    for row, seed in zip(rows, fresh.seeds):
        seeds[row] = seed
    return replace(batch, seeds=seeds, latents=put(batch.latents, fresh.latents), noise=put(batch.noise, fresh.noise),
                   image_latents=put(batch.image_latents, fresh.image_latents),
                   unet_extra=put(batch.unet_extra, fresh.unet_extra, True))


@torch.no_grad()
def denoise_steps(runner: ComponentRunner, batch: DenoisingBatch, settings: GenerationSettings,
                  stop_at: int | None = None, on_step: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Run DDIM steps ``0 .. stop_at - 1`` (all T by default) without gradient from ``batch.latents``.

    Returns the latents float [K, 4, h, w] at ``batch.timesteps[stop_at]`` (x_t, the input of step
    ``stop_at``), or the final latents when every step ran. ``on_step(i, T)`` is called after each
    step; ``should_stop()`` is checked before each step and raises :class:`GenerationCancelled`.
    """
    total = len(batch.timesteps)
    end = total if stop_at is None else stop_at
    if not 0 <= end <= total:
        raise ValueError(f"stop_at: {stop_at} is outside 0..{total}")
    latents = batch.latents
    for i in range(end):
        if should_stop is not None and should_stop():
            raise GenerationCancelled(f"cancelled before step {i + 1} of {total}")
        uncond, cond = guided_noise(runner, batch, latents, batch.timesteps[i], settings.controlnet_scale)
        latents = scheduler_step(batch, i, combine_guidance(uncond, cond, settings.guidance_scale), latents,
                                 settings.eta)
        if on_step is not None:
            on_step(i + 1, total)
    return latents


def denoise(runner: ComponentRunner, prepared: PreparedRequest, seeds: Sequence[int], settings: GenerationSettings,
            latents: torch.Tensor | None = None, on_step: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Denoise ``len(seeds)`` candidates; returns decoded images float [K, 3, H, W] in about [-1, 1].

    ``on_step(i, steps)`` is called after each step (progress bars); ``should_stop()`` is checked
    before each step and raises :class:`GenerationCancelled` when true.
    """
    batch = start_denoising(runner, prepared, seeds, settings, latents)
    final = denoise_steps(runner, batch, settings, on_step=on_step, should_stop=should_stop)
    with torch.no_grad():
        return runner.vae_decoder(final)


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
