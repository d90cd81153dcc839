"""Per-request constants: computed once per request, reused by every attempt and step.

Text embeddings (prompt and negative prompt), the control image, the mask on the latent grid and
the VAE latent distributions of the init / masked image do not change between attempts, so the
loop never recomputes them (docs/design.md, one ad request).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rfad.canvas import AdCanvas
from rfad.pipeline.runner import ComponentRunner
from rfad.pipeline.tokens import tokenize


@dataclass
class PreparedRequest:
    """Tensors on the runner's device.

    text_embeddings: float [2, 77, D], row 0 the negative prompt, row 1 the prompt (CFG order).
    control: float [1, 3, H, W] in [0, 1], the Canny control image.
    mask_latent: float [1, 1, H/8, W/8], 1 where the background is generated (binarised, nearest-resized).
    image_latent_dist: (mean, std) [1, 4, H/8, W/8] of the init image, for latent blending (4-channel UNet).
    masked_latent_dist: (mean, std) of the masked init image, for a 9-channel inpainting UNet.
    """

    canvas: AdCanvas
    text_embeddings: torch.Tensor
    control: torch.Tensor
    mask: torch.Tensor
    mask_latent: torch.Tensor
    image_latent_dist: tuple[torch.Tensor, torch.Tensor] | None
    masked_latent_dist: tuple[torch.Tensor, torch.Tensor] | None


def encode_prompts(runner: ComponentRunner, prompt: str, negative_prompt: str = "") -> torch.Tensor:
    """[negative, prompt] -> float [2, 77, D], padded/truncated to the tokenizer's length as diffusers does."""
    ids, _ = tokenize(runner.info.tokenizer, [negative_prompt, prompt])
    return runner.text_encoder(ids.to(runner.device))


def image_to_tensor(image: np.ndarray, device: torch.device, dtype: torch.dtype, signed: bool) -> torch.Tensor:
    """uint8 [H, W, C] -> float [1, C, H, W] in [-1, 1] (``signed``) or [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=torch.float32)
    tensor = tensor.permute(2, 0, 1).unsqueeze(0) / 255.0
    return (tensor * 2.0 - 1.0 if signed else tensor).to(dtype)


def prepare_request(runner: ComponentRunner, canvas: AdCanvas, prompt: str, negative_prompt: str = "") -> PreparedRequest:
    """Everything constant per request, from the canvas and the prompts."""
    device, dtype = runner.device, runner.dtype
    info = runner.info
    init = image_to_tensor(canvas.init_image, device, torch.float32, signed=True)
    control = image_to_tensor(canvas.control_image, device, dtype, signed=False)
    # Binarise at 0.5 like diffusers' mask processor: 1 = generate, 0 = keep the product.
    mask = (torch.from_numpy(canvas.mask).to(device=device, dtype=torch.float32) / 255.0 >= 0.5).float()[None, None]
    height, width = canvas.mask.shape
    latent_size = (height // info.vae_scale_factor, width // info.vae_scale_factor)
    mask_latent = F.interpolate(mask, size=latent_size).to(dtype)
    image_dist = masked_dist = None
    if info.unet_in_channels == 4:
        image_dist = runner.vae_encoder(init.to(dtype))
    else:
        masked_dist = runner.vae_encoder((init * (mask < 0.5)).to(dtype))
    return PreparedRequest(
        canvas=canvas,
        text_embeddings=encode_prompts(runner, prompt, negative_prompt).to(dtype),
        control=control,
        mask=mask.to(dtype),
        mask_latent=mask_latent,
        image_latent_dist=image_dist,
        masked_latent_dist=masked_dist,
    )
