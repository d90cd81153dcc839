"""The miniature world's VAE: a tiny ``AutoencoderKL`` (factor 2 ** (blocks - 1)) trained on crops of the scenes.

The VAE is fully convolutional, so it trains on random crops (64 px by default: a quarter of
the pixels of a whole 128 px scene, 4.4x the samples a second, docs/miniworld.md) and then
encodes whole scenes. Loss: L1 reconstruction (sharper edges than MSE; the oracle reads table
lines 2 px thick). The posterior's log-variance is held constant and small
(:data:`HELD_LOG_VARIANCE`), making it a deterministic autoencoder in ``AutoencoderKL``'s format:
with SD's small KL term under Adam, or with none, the learned noise grew to a fifth of the
latents' spread and blurred the reconstructions (docs/miniworld.md). Its ``scaling_factor`` is set
afterwards to 1 / std of the scenes' latents, as SD-1.5's was, so the diffusion models see
unit-variance latents.
"""

from __future__ import annotations


import numpy as np
import torch

from rfad.tiny.shapes import tiny_shape
from rfad.tiny.zoo import tiny_vae
from rfad.trainer.miniworld.progress import LoopState, PhaseRun
from rfad.trainer.miniworld.schedule import make_optimiser


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# log(std): the posterior's log-variance is held here (std 0.0025 in unscaled latent units).
HELD_LOG_VARIANCE = -12.0


def hold_log_variance(vae, value: float = HELD_LOG_VARIANCE) -> None:
    """Make the encoder's log-variance outputs the constant ``value`` (in place): the log-variance rows
    of the last convolution before the posterior (``quant_conv``, 1 x 1) get zero weights and bias ``value``."""
    conv, latent = vae.quant_conv, vae.config.latent_channels
    with torch.no_grad():
        conv.weight[latent:] = 0.0
        conv.bias[latent:] = value


def train_vae(images: np.ndarray, steps: int, batch: int, crop: int, lr: float, seed: int, channels: tuple[int, ...],
              norm_groups: int, run: PhaseRun):
    """Train a VAE on random ``crop`` x ``crop`` crops (random horizontal flips) of ``images`` (uint8 [N, H, W, 3]).

    ``run`` logs each step's ``{"loss"}`` (L1) and checkpoints the phase (a stopped one resumes from
    its last checkpoint). Returns the VAE in eval mode.
    """
    side = images.shape[1]
    torch.manual_seed(seed)
    factor = 2 ** (len(channels) - 1)
    vae = tiny_vae(seed, tiny_shape(vae_channels=channels, sample_size=side // factor, norm_num_groups=norm_groups))
    vae.train()
    hold_log_variance(vae)
    optimiser, scheduler = make_optimiser(vae.parameters(), lr, steps)
    rng = np.random.default_rng([seed, 1])
    noise = torch.Generator().manual_seed(seed)
    state = LoopState({"vae": vae}, optimiser, scheduler, {"crops": rng}, {"noise": noise})
    for step in range(run.start(state), steps):
        picks = rng.integers(len(images), size=batch)
        x0, y0 = rng.integers(side - crop + 1, size=2)
        crops = images[picks, y0:y0 + crop, x0:x0 + crop]
        flips = rng.random(batch) < 0.5
        crops = np.where(flips[:, None, None, None], crops[:, :, ::-1], crops)
        target = images_to_tensor(crops)
        posterior = vae.encode(target).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=noise)
        loss = (vae.decode(latents).sample - target).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        hold_log_variance(vae)  # undo the step's change (gradient and weight decay) to those rows
        run.step_done(step, {"loss": loss.item()}, state, steps)
    return vae.eval()


@torch.no_grad()
def encode_images(vae, images: np.ndarray, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled latent distributions of uint8 [N, H, W, 3] images: (mean, std), float16 [N, 4, H/f, W/f] each (f: the VAE's factor)
    (half precision halves the cache; the diffusion models train on samples drawn from it)."""
    means, stds = [], []
    for start in range(0, len(images), batch):
        posterior = vae.encode(images_to_tensor(images[start:start + batch])).latent_dist
        means.append(posterior.mean.half())
        stds.append(posterior.std.half())
    return torch.cat(means), torch.cat(stds)


def set_scaling_factor(vae, mean: torch.Tensor, std: torch.Tensor) -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of latent samples (SD-1.5's recipe); returns it."""
    generator = torch.Generator().manual_seed(0)
    samples = mean.float() + std.float() * torch.randn(mean.shape, generator=generator)
    factor = float(1.0 / samples.std())
    vae.register_to_config(scaling_factor=factor)
    return factor


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the VAE's reconstructions from the latent means, uint8 [N, H, W, 3]."""
    out = []
    for start in range(0, len(images), batch):
        posterior = vae.encode(images_to_tensor(images[start:start + batch])).latent_dist
        decoded = vae.decode(posterior.mean).sample
        out.append(((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def reconstruction_agreement(vae, per_class: int, seed: int) -> dict:
    """The oracle on the VAE's reconstructions of fresh scenes (product pasted back, as generation does).

    A VAE that blurs away a table line or a handle changes the oracle's verdict here first. Returns
    ``{"per_class": {label: share agreeing with the drawn label}, "n_per_class": per_class}``.
    """
    from rfad.canvas import paste_back
    from rfad.contract import CLASS_NAMES
    from rfad.miniworld.oracle import label_ad
    from rfad.trainer.data.scenes import CHECK_STREAM, draw_scene

    shares = {}
    for c, label in enumerate(CLASS_NAMES):
        drawn = [draw_scene(label, np.random.default_rng([seed, CHECK_STREAM, c, j])) for j in range(per_class)]
        decoded = reconstruct(vae, np.stack([scene.image for scene in drawn]))
        agreed = sum(label_ad(paste_back(image, scene.canvas), np.asarray(scene.canvas.product_rgba),
                              scene.canvas.product_alpha).label == label for image, scene in zip(decoded, drawn))
        shares[label] = round(agreed / per_class, 4)
    return {"per_class": shares, "n_per_class": per_class}
