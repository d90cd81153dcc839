"""nn.Modules whose forward takes exactly the spec's inputs, in order, and returns its outputs.

Each wrapper computes what the torch runner computes for that component, so a graph exported
from it is interchangeable with the in-process model (checked by the parity step).
:data:`WRAPPERS` holds one per registered component (:mod:`rfad.components.registry`), keyed
by the component's name; :func:`check_wrappers` says where the two disagree.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rfad.components.registry import COMPONENTS
from rfad.models.rfnet import RFNetJudge, RFNetText


class TextEncoderGraph(nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids)[0]


def _scaled(residuals, scale):
    # diffusers multiplies by a Python float; a per-sample tensor keeps the scale a graph input.
    factor = scale.view(-1, 1, 1, 1)
    return [r * factor for r in residuals]


class ControlNetGraph(nn.Module):
    def __init__(self, controlnet):
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=controlnet_cond, conditioning_scale=1.0, return_dict=False)
        return tuple(_scaled(list(down) + [mid], conditioning_scale))


class UNetGraph(nn.Module):
    """UNet with the residuals as separate inputs (``sample, timestep, encoder_hidden_states, *residuals``)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, *residuals):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         down_block_additional_residuals=list(residuals[:-1]),
                         mid_block_additional_residual=residuals[-1], return_dict=False)[0]


class ControlNetUNetGraph(nn.Module):
    """ControlNet + UNet in one graph; ``unet_extra`` (mask + masked latents) only for a 9-channel UNet."""

    def __init__(self, controlnet, unet):
        super().__init__()
        self.controlnet = ControlNetGraph(controlnet)
        self.unet = UNetGraph(unet)
        self.inpaint = unet.config.in_channels != controlnet.config.in_channels

    def forward(self, sample, *rest):
        if self.inpaint:
            unet_extra, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale = rest
        else:
            timestep, encoder_hidden_states, controlnet_cond, conditioning_scale = rest
        residuals = self.controlnet(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale)
        unet_sample = torch.cat([sample, unet_extra], dim=1) if self.inpaint else sample
        return self.unet(unet_sample, timestep, encoder_hidden_states, *residuals)


class VaeEncoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.scale = float(vae.config.scaling_factor)

    def forward(self, images):
        dist = self.vae.encode(images).latent_dist
        return dist.mean * self.scale, dist.std * self.scale


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.scale = float(vae.config.scaling_factor)

    def forward(self, latents):
        return self.vae.decode(latents / self.scale, return_dict=False)[0]


# component -> (diffusion models, judge models or None) -> the module exported as its graph.
WRAPPERS: dict[str, Callable[..., nn.Module]] = {
    "text_encoder": lambda d, j: TextEncoderGraph(d.text_encoder),
    "controlnet": lambda d, j: ControlNetGraph(d.controlnet),
    "unet": lambda d, j: UNetGraph(d.unet),
    "controlnet_unet": lambda d, j: ControlNetUNetGraph(d.controlnet, d.unet),
    "vae_encoder": lambda d, j: VaeEncoderGraph(d.vae),
    "vae_decoder": lambda d, j: VaeDecoderGraph(d.vae),
    "depth": lambda d, j: j.depth,
    "saliency": lambda d, j: j.saliency,
    "rfnet_text": lambda d, j: RFNetText(j.rfnet),
    "rfnet": lambda d, j: RFNetJudge(j.rfnet),
    "screen_rfnet_text": lambda d, j: RFNetText(j.screen_rfnet),
    "screen_rfnet": lambda d, j: RFNetJudge(j.screen_rfnet),
}


def check_wrappers(wrappers: dict[str, Callable] = WRAPPERS) -> None:
    """A registered component without a wrapper, or a wrapper without a component, is an error."""
    unwrapped, unregistered = sorted(set(COMPONENTS) - set(wrappers)), sorted(set(wrappers) - set(COMPONENTS))
    if unwrapped or unregistered:
        raise RuntimeError(f"export wrappers and the component registry disagree: components without a wrapper "
                           f"{unwrapped}, wrappers without a component {unregistered} (rfad/export/wrappers.py)")
