"""The ``depth`` and ``saliency`` components: image in [0, 1] -> one-channel map in [0, 1].

RFNet reads the depth map (DPT) and the saliency map (U2-Net) of every generated image, and
RFFT back-propagates through both, so each is a differentiable module with the same contract:
``images`` float [B, 3, H, W] in [0, 1] -> float [B, 1, H, W] in [0, 1], at the input's size.
Each resizes to its network's working size, runs it, resizes back and min-max normalises
per image (the official U2-Net test script normalises the same way; DPT's relative depth has
no fixed scale, so it is normalised too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rfad.models.folders import ModelFolderError, check_model_folder, loading


def _normalise_per_image(maps: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] -> min-max scaled to [0, 1] per image (a flat map becomes 0)."""
    low = maps.amin(dim=(1, 2, 3), keepdim=True)
    high = maps.amax(dim=(1, 2, 3), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


class DepthEstimator(nn.Module):
    """DPT (transformers ``DPTForDepthEstimation``) as the ``depth`` component.

    DPT's ViT backbone needs a square input of its configured size (384 for DPT-Large; the
    image processor config says), normalised with mean 0.5 / std 0.5.
    """

    def __init__(self, dpt: nn.Module, size: int = 384, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.dpt = dpt
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "DepthEstimator":
        """A transformers DPT folder (config.json, model.safetensors, optional preprocessor_config.json)."""
        from transformers import DPTForDepthEstimation

        folder = check_model_folder(path, "depth model (DPT)")
        with loading("depth model (DPT)", folder):
            dpt = DPTForDepthEstimation.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        size, mean, std = 384, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        processor = folder / "preprocessor_config.json"
        if processor.is_file():
            config = json.loads(processor.read_text())
            size = int(config.get("size", {}).get("height", size))
            mean = tuple(config.get("image_mean", mean))
            std = tuple(config.get("image_std", std))
        return cls(dpt, size, mean, std).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B, 3, H, W] in [0, 1] -> depth map float [B, 1, H, W] in [0, 1] (near = bright)."""
        return _normalise_per_image(self.unscaled(images))

    def unscaled(self, images: torch.Tensor) -> torch.Tensor:
        """DPT's depth before the per-image scaling, at the images' size: float [B, 1, H, W], >= 0 (DPT's
        head ends in a ReLU). Training reads this: a loss on the scaled map cannot see the output's scale."""
        height, width = images.shape[-2:]
        x = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        depth = self.dpt(pixel_values=(x - self.mean) / self.std).predicted_depth.unsqueeze(1)
        return F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False)


class SaliencyEstimator(nn.Module):
    """U2-Net as the ``saliency`` component (official test-time resize to 320 px, fused map d0)."""

    def __init__(self, u2net: nn.Module, size: int = 320):
        super().__init__()
        self.u2net = u2net
        self.size = int(size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "SaliencyEstimator":
        """A U2-Net folder (save_pretrained) or an official u2net.pth / u2netp.pth / .safetensors file."""
        from rfad.models.u2net import U2Net

        if not Path(path).exists():
            raise ModelFolderError(f"saliency model (U2-Net): {path} does not exist")
        with loading("saliency model (U2-Net)", path):
            u2net = U2Net.from_pretrained(path)
        return cls(u2net, size=u2net.config.input_size).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B, 3, H, W] in [0, 1] -> saliency map float [B, 1, H, W] in [0, 1]."""
        from rfad.models.u2net import saliency_preprocess

        height, width = images.shape[-2:]
        x = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        saliency = self.u2net(saliency_preprocess(x))
        saliency = F.interpolate(saliency, size=(height, width), mode="bilinear", align_corners=False)
        return _normalise_per_image(saliency)
