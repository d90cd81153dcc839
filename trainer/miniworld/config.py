"""The settings of ``rfad-train miniworld``: one declaration, read by the command's options
(their defaults) and by the trainer. Torch-free, so the CLI builds its help without importing torch."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from rfad.trainer.data.scenes import SIDE, class_mix


@dataclass
class MiniworldTrainConfig:
    """Every flag of ``rfad-train miniworld``; the defaults made the shipped generator (docs/miniworld.md)."""

    out: str
    seed: int = 0
    scenes: int = 6000
    available_share: float = 0.4
    vae_steps: int = 2000
    vae_batch: int = 16
    vae_crop: int = 64
    vae_lr: float = 1e-3
    vae_channels: tuple[int, ...] = (32, 64, 64)
    norm_groups: int = 8  # GroupNorm groups of the VAE, UNet and ControlNet
    unet_steps: int = 9000
    unet_batch: int = 16
    unet_lr: float = 4e-4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    text_encoder: str = "train"  # "train": fine-tuned with the UNet; "frozen": the zoo's random weights
    controlnet_steps: int = 800
    controlnet_batch: int = 16
    controlnet_lr: float = 4e-4
    uncond_prob: float = 0.1
    snr_gamma: float = 5.0
    check_per_class: int = 100
    threads: int | None = None
    log_every: int = 50
    checkpoint_every: int = 500  # steps between checkpoints of the phase in progress (0: none); a multiple of log_every
    stop_after: str | None = None  # "vae" or "unet": keep that phase (OUT.stages) and stop; the same command resumes
    command: list[str] = field(default_factory=lambda: list(sys.argv))

    @property
    def latent_factor(self) -> int:
        """Image side / latent side: 2 ** (VAE blocks - 1); 8 as SD-1.5's, 4 keeps 32 x 32 latents at 128 px."""
        return 2 ** (len(self.vae_channels) - 1)

    def __post_init__(self) -> None:
        for name in ("scenes", "vae_steps", "vae_batch", "unet_steps", "unet_batch", "controlnet_steps",
                     "controlnet_batch", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")
        for name in ("vae_channels", "unet_channels"):
            if any(width % self.norm_groups for width in getattr(self, name)):
                raise ValueError(f"norm-groups: {self.norm_groups} does not divide every width of "
                                 f"{name.replace('_', '-')} {list(getattr(self, name))}")
        if not 2 <= len(self.vae_channels) <= 4:
            raise ValueError(f"vae-channels: 2 to 4 blocks (latent factor 2, 4 or 8), got {len(self.vae_channels)}: "
                             f"{list(self.vae_channels)}")
        if self.stop_after not in (None, "vae", "unet"):
            raise ValueError(f"stop-after: expected 'vae' or 'unet', got {self.stop_after!r}")
        if self.vae_crop % 8 or not 8 <= self.vae_crop <= SIDE:
            raise ValueError(f"vae crop: must be a multiple of 8 in [8, {SIDE}], got {self.vae_crop}")
        if self.text_encoder not in ("train", "frozen"):
            raise ValueError(f"text-encoder: expected 'train' or 'frozen', got {self.text_encoder!r}")
        if not 0 <= self.uncond_prob < 1:
            raise ValueError(f"uncond-prob: must be in [0, 1), got {self.uncond_prob}")
        if self.checkpoint_every < 0 or self.checkpoint_every % self.log_every:
            raise ValueError(f"checkpoint-every: must be 0 or a multiple of --log-every ({self.log_every}), got "
                             f"{self.checkpoint_every}")
        class_mix(self.available_share)  # validates the share
