"""The miniature world's UNet and ControlNet: noise prediction on cached scene latents.

Both train as SD-1.5's did: a latent sample of a scene, noise added at a random timestep by
diffusers' ``DDPMScheduler`` (SD-1.5's schedule, the one the generation loop's DDIM reads), the
model predicts the noise (epsilon: RFFT's x0-prediction assumes it), MSE weighted by min-SNR-5
(Hang et al. 2023, diffusers' ``--snr_gamma``: the tiny models converge in fewer steps). A share
of the prompts is replaced by the empty prompt, the loop's negative prompt, so that
classifier-free guidance has an unconditional model to push away from.

The UNet trains first, with the text encoder (the zoo's tiny CLIP architecture, from its seeded
weights) trained beside it or frozen; then the ControlNet, made from the trained UNet by
``ControlNetModel.from_unet`` (zero output convolutions, as ControlNet training starts), learns
from the canvas's Canny image of the product with the UNet and text encoder frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rfad.tiny.shapes import tiny_shape
from rfad.tiny.zoo import SD15_SCHEDULER_CONFIG, tiny_unet
from rfad.trainer.miniworld.progress import LoopState, PhaseRun
from rfad.trainer.miniworld.schedule import make_optimiser


@dataclass(frozen=True, eq=False)
class LatentBank:
    """What the diffusion models train on. mean, std: float16 [N, 4, h, w], the VAE's unscaled latent distributions;
    scaling_factor: the VAE's; input_ids: int64 [N, 77] prompt tokens; empty_ids: int64 [77], the empty prompt;
    controls: uint8 [N, H, W] Canny edges of the product."""

    mean: torch.Tensor
    std: torch.Tensor
    scaling_factor: float
    input_ids: torch.Tensor
    empty_ids: torch.Tensor
    controls: np.ndarray


class NoisingObjective:
    """Draws noised latent batches and scores noise predictions (min-SNR weighted MSE)."""

    def __init__(self, bank: LatentBank, batch: int, uncond_prob: float, snr_gamma: float, seed: int):
        from diffusers import DDPMScheduler

        self.bank, self.batch, self.uncond_prob, self.snr_gamma = bank, batch, uncond_prob, snr_gamma
        self.scheduler = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)
        self.rng = np.random.default_rng([seed, 2])
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(picks [B], noisy latents [B, 4, h, w], noise [B, 4, h, w], timesteps [B], input_ids [B, 77])."""
        bank, g = self.bank, self.generator
        picks = self.rng.integers(len(bank.input_ids), size=self.batch)
        index = torch.from_numpy(picks)
        mean, std = bank.mean[index].float(), bank.std[index].float()
        latents = (mean + std * torch.randn(mean.shape, generator=g)) * bank.scaling_factor
        noise = torch.randn(latents.shape, generator=g)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (self.batch,), generator=g)
        ids = bank.input_ids[index].clone()
        ids[torch.from_numpy(self.rng.random(self.batch) < self.uncond_prob)] = bank.empty_ids
        return picks, self.scheduler.add_noise(latents, noise, timesteps), noise, timesteps, ids

    def loss(self, prediction: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        if self.snr_gamma > 0:
            from diffusers.training_utils import compute_snr

            snr = compute_snr(self.scheduler, timesteps)
            per_sample = per_sample * snr.clamp(max=self.snr_gamma) / snr
        return per_sample.mean()


def _train(parameters, steps: int, lr: float, step_loss: Callable[[], torch.Tensor], run: PhaseRun,
           modules: dict[str, torch.nn.Module], objective: NoisingObjective) -> None:
    """AdamW over ``parameters`` for ``steps`` steps of ``step_loss``, from where ``run``'s last checkpoint
    of ``modules`` and ``objective``'s draws left off."""
    parameters = list(parameters)
    optimiser, scheduler = make_optimiser(parameters, lr, steps)
    state = LoopState(modules, optimiser, scheduler, {"objective": objective.rng}, {"objective": objective.generator})
    for step in range(run.start(state), steps):
        loss = step_loss()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        scheduler.step()
        run.step_done(step, {"loss": loss.item()}, state, steps)


def train_unet(bank: LatentBank, text_encoder, *, steps: int, batch: int, lr: float, uncond_prob: float,
               snr_gamma: float, train_text_encoder: bool, channels: tuple[int, ...], norm_groups: int, seed: int,
               run: PhaseRun):
    """Train a 4-channel UNet (and, if ``train_text_encoder``, the text encoder); returns the UNet in eval mode.
    ``run``: the phase's log and checkpoints (a stopped phase resumes from its last checkpoint)."""
    torch.manual_seed(seed)
    side = bank.mean.shape[-1]
    unet = tiny_unet(4, seed, tiny_shape(unet_channels=channels, sample_size=side, norm_num_groups=norm_groups))
    unet.train()
    text_encoder.train(train_text_encoder).requires_grad_(train_text_encoder)
    objective = NoisingObjective(bank, batch, uncond_prob, snr_gamma, seed)

    def step_loss() -> torch.Tensor:
        _, noisy, noise, timesteps, ids = objective.draw()
        prediction = unet(noisy, timesteps, encoder_hidden_states=text_encoder(ids)[0]).sample
        return objective.loss(prediction, noise, timesteps)

    parameters = list(unet.parameters()) + (list(text_encoder.parameters()) if train_text_encoder else [])
    _train(parameters, steps, lr, step_loss, run, {"unet": unet, "text_encoder": text_encoder}, objective)
    text_encoder.eval().requires_grad_(False)
    return unet.eval()


def controls_to_tensor(controls: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W] edges -> float [B, 3, H, W] in [0, 1], the control image as the loop passes it."""
    return (torch.from_numpy(np.ascontiguousarray(controls)).float() / 255.0)[:, None].expand(-1, 3, -1, -1)


def conditioning_channels(factor: int) -> tuple[int, ...]:
    """The ControlNet conditioning embedding's widths for a VAE of ``factor`` (2, 4 or 8): each width after the
    first halves the control image, so it lands on the latent grid; (16, 32, 48, 64) at 8, the zoo's and SD's."""
    downsamplings = {2: 1, 4: 2, 8: 3}.get(factor)
    if downsamplings is None:
        raise ValueError(f"latent factor: expected 2, 4 or 8 (image side / latent side), got {factor}")
    return (16, 32, 48, 64)[:downsamplings + 1]


def train_controlnet(bank: LatentBank, unet, text_encoder, *, steps: int, batch: int, lr: float, uncond_prob: float,
                     snr_gamma: float, seed: int, run: PhaseRun):
    """Train a ControlNet made from ``unet`` on the product's Canny edges, UNet and text encoder frozen
    (``run``: the phase's log and checkpoints)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning_channels(
        bank.controls.shape[-1] // bank.mean.shape[-1])).train()
    objective = NoisingObjective(bank, batch, uncond_prob, snr_gamma, seed + 1)

    def step_loss() -> torch.Tensor:
        picks, noisy, noise, timesteps, ids = objective.draw()
        with torch.no_grad():
            text = text_encoder(ids)[0]
        down, mid = controlnet(noisy, timesteps, encoder_hidden_states=text,
                               controlnet_cond=controls_to_tensor(bank.controls[picks]), return_dict=False)
        prediction = unet(noisy, timesteps, encoder_hidden_states=text, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        return objective.loss(prediction, noise, timesteps)

    _train(controlnet.parameters(), steps, lr, step_loss, run, {"controlnet": controlnet}, objective)
    return controlnet.eval()
