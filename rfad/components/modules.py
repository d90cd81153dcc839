"""Each component as a torch module: ``forward`` takes exactly the spec's inputs, in spec order,
and returns its outputs, in spec order.

Written once, for both users: the torch runner calls these modules in process
(:class:`rfad.pipeline.torch_runner.TorchRunner`), and ``rfad-export onnx`` traces the same
modules into the graphs the other runners call, so every runner computes one thing per component
(the export's parity step checks graph against module). :data:`MODULES` holds one builder per
registered component (:mod:`rfad.components.registry`), keyed by the component's name;
:func:`check_modules` says where the two disagree. :func:`model_facts` reads the per-checkpoint
sizes the specs are built from.

Shapes (SD-1.5 at 512 px; B the batch, 2x the candidates under classifier-free guidance):
``text_encoder`` input_ids int64 [B, 77] -> [B, 77, 768]; ``controlnet`` latents [B, 4, 64, 64],
timestep [B], text [B, 77, 768], control image [B, 3, 512, 512] in [0, 1], scale [B] -> 12 down
residuals and a mid residual, each [B, C, 64/f, 64/f]; ``unet`` the same latents, timestep and
text plus the residuals -> noise [B, 4, 64, 64]; ``vae_encoder`` images [B, 3, 512, 512] in
[-1, 1] -> latent mean and std [B, 4, 64, 64] (scaled); ``vae_decoder`` the reverse; ``depth``,
``saliency`` images [B, 3, S, S] -> maps [B, 1, S, S]; ``rfnet_text`` caption ids and mask
[B, L] -> embeddings [B, L, d]; ``rfnet`` images and maps at S px, embeddings -> probabilities [B, 5]; ``screen_rfnet_text`` and
``screen_rfnet`` the same, of early screening's RFNet (x0-previews at S px).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rfad.components.registry import COMPONENTS
from rfad.components.specs import ModelFacts
from rfad.models.rfnet import RFNetJudge, RFNetText


class TextEncoderGraph(nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids)[0]


def _scaled(residuals, scale):
    # diffusers multiplies by a Python float; a per-sample tensor keeps the scale a graph input
    # (in the residuals' dtype: a float16 model's residuals stay float16).
    factor = scale.view(-1, 1, 1, 1).to(residuals[0].dtype)
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
        # RFFT's learner passes its ControlNet wrapped for data-parallel training (DDP), which keeps
        # the diffusers model, and so its config, on ``.module``.
        bare = getattr(controlnet, "module", controlnet)
        self.inpaint = unet.config.in_channels != bare.config.in_channels

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


# component -> (diffusion models, judge models or None) -> its module.
MODULES: dict[str, Callable[..., nn.Module]] = {
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


def check_modules(modules: dict[str, Callable] = MODULES) -> None:
    """A registered component without a module, or a module without a component, is an error."""
    unwrapped, unregistered = sorted(set(COMPONENTS) - set(modules)), sorted(set(modules) - set(COMPONENTS))
    if unwrapped or unregistered:
        raise RuntimeError(f"component modules and the component registry disagree: components without a module "
                           f"{unwrapped}, modules without a component {unregistered} (rfad/components/modules.py)")


def provides(group: str, diffusion, judge) -> bool:
    """Whether the loaded models have the components of ``group`` (``screen``: the judge models
    with a screening RFNet)."""
    if group == "diffusion":
        return diffusion is not None
    return judge is not None and (group == "judge" or judge.screen_rfnet is not None)


def component_modules(diffusion, judge=None) -> dict[str, nn.Module]:
    """The module of every registered component the models provide (the judge's with ``judge``,
    the screening RFNet's where ``judge`` has one), sharing the models' parameters; their training
    mode is left as it is."""
    check_modules()
    return {name: MODULES[name](diffusion, judge) for name, component in COMPONENTS.items()
            if provides(component.group, diffusion, judge)}


def model_facts(diffusion, judge=None) -> ModelFacts:
    """The per-checkpoint sizes the specs need: one ControlNet call on an 8 x 8 latent (its control
    image 8 x the VAE's factor wide) gives every residual's channels and downscale factor, whatever
    the architecture."""
    text_dim = int(diffusion.text_encoder.config.hidden_size)
    vae_factor = 2 ** (len(diffusion.vae.config.block_out_channels) - 1)
    weight = next(diffusion.controlnet.parameters())
    like = dict(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        down, mid = diffusion.controlnet(
            torch.zeros(1, 4, 8, 8, **like), torch.tensor([1.0], **like),
            encoder_hidden_states=torch.zeros(1, 77, text_dim, **like),
            controlnet_cond=torch.zeros(1, 3, 8 * vae_factor, 8 * vae_factor, **like), return_dict=False,
        )
    judge_facts = {}
    if judge is not None:
        judge_facts = dict(rfnet_width=int(judge.rfnet.config.width), num_classes=int(judge.rfnet.config.num_classes),
                           caption_tokens=int(judge.caption_tokenizer.model_max_length),
                           judge_size=int(judge.rfnet.config.image_size), screen_rfnet=judge.screen_rfnet is not None)
    return ModelFacts(
        text_dim=text_dim, text_tokens=int(diffusion.tokenizer.model_max_length),
        latent_channels=int(diffusion.vae.config.latent_channels), latent_factor=vae_factor,
        unet_in_channels=int(diffusion.unet.config.in_channels),
        down_residuals=tuple((int(d.shape[1]), 8 // int(d.shape[2])) for d in down),
        mid_residual=(int(mid.shape[1]), 8 // int(mid.shape[2])), **judge_facts,
    )
