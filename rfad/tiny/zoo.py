"""The tiny model zoo: random-weight models of the real architectures, in the real folder layouts.

Tests, the demo and CI have no model hub, so they build SD-1.5-shaped models small enough for
two CPU cores and save them exactly as real weights are laid out on disk. Everything
downstream (loading, the generation loop, export, serving) then runs the same code paths it
runs for real weights. Same seed, same weights: each model is built under its own seed.

Layout written by :func:`build_tiny_zoo`::

    zoo/
      rfad-models.json      the model set (roles -> folders), read by --models zoo
      sd15/                 diffusers SD-1.5 folder: 4-channel UNet, VAE (factor 8), CLIP, tokenizer, scheduler
      sd15-inpaint/         the same with a 9-channel inpainting UNet
      controlnet/           ControlNet (canny role) built from the 4-channel UNet, non-zero output convs
      roberta/              RoBERTa + byte-level BPE tokenizer (RFNet's text backbone)
      resnet/               ResNet (RFNet's image backbone)
      dpt/                  DPT depth model + image processor config
      u2net/                U2-Net saliency model (tiny widths, official parameter names)
      rfnet/                RFNet judge, UNTRAINED (backbones from resnet/ and roberta/) + caption tokenizer
      samples/              sample product cut-outs (RGBA PNG) drawn in code
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rfad.models.model_set import ModelSet
from rfad.models.u2net import U2Net
from rfad.models.u2net_config import U2NetConfig
from rfad.tiny.products import write_sample_products
from rfad.tiny.tokenizers import build_clip_tokenizer, build_roberta_tokenizer

# SD-1.5's scheduler config as shipped with the real weights (PNDM; the loop builds DDIM from it).
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

CROSS_ATTENTION_DIM = 32
# Seeds per model, offset from the zoo seed, so that adding a model never changes the others.
_SEED_OFFSETS = {"clip": 1, "unet": 2, "unet_inpaint": 3, "vae": 4, "controlnet": 5, "roberta": 6,
                 "resnet": 7, "dpt": 8, "u2net": 9, "rfnet": 10}
# Widths of the tiny U2-Net: same names as the official model, a few channels each, and
# deliberately non-uniform so that every width is plumbed through correctly.
TINY_U2NET_WIDTHS = {
    "encoder_mid_channels": (4, 4, 8, 8, 8, 8),
    "encoder_out_channels": (8, 8, 16, 16, 16, 16),
    "decoder_mid_channels": (4, 4, 4, 8, 8),
    "decoder_out_channels": (8, 8, 8, 16, 16),
}


@dataclass(frozen=True)
class TinyZooSpec:
    """Sizes of the tiny models (defaults: NOTES.md's, about 1.4M UNet parameters)."""

    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 32, 64, 64)
    sample_size: int = 64  # latent side for 512 px, as SD-1.5's config says
    controlnet_output_std: float = 0.05
    # SD-1.5's 32 groups; with 32-channel blocks that is one channel per group, which normalises away
    # each channel's mean over the image (a flat colour): the miniature world's trained models use fewer.
    norm_num_groups: int = 32


def _seeded(seed: int, name: str) -> None:
    torch.manual_seed(seed * 100 + _SEED_OFFSETS[name])


def tiny_text_encoder(tokenizer, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    _seeded(seed, "clip")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=CROSS_ATTENTION_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def tiny_unet(in_channels: int = 4, seed: int = 0, spec: TinyZooSpec = TinyZooSpec()):
    from diffusers import UNet2DConditionModel

    _seeded(seed, "unet" if in_channels == 4 else "unet_inpaint")
    return UNet2DConditionModel(
        sample_size=spec.sample_size, in_channels=in_channels, out_channels=4,
        block_out_channels=spec.unet_channels, layers_per_block=2,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(spec.unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(spec.unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8, norm_num_groups=spec.norm_num_groups,
    ).eval()


def tiny_vae(seed: int = 0, spec: TinyZooSpec = TinyZooSpec()):
    from diffusers import AutoencoderKL

    _seeded(seed, "vae")
    # Four blocks so the downscale factor is 8 like SD's: the ControlNet conditioning
    # embedding shrinks the control image by 8 and must land on the latent grid.
    blocks = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=spec.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1, norm_num_groups=spec.norm_num_groups, sample_size=spec.sample_size * 8,
        scaling_factor=0.18215,
    ).eval()


def tiny_controlnet(unet, seed: int = 0, spec: TinyZooSpec = TinyZooSpec()):
    """A ControlNet from the 4-channel UNet whose residual outputs are NOT zero.

    ``ControlNetModel.from_unet`` zero-initialises the output convolutions (right for training
    from scratch), which would make every residual 0 and every parity test pass trivially.
    """
    from diffusers import ControlNetModel

    _seeded(seed, "controlnet")
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 48, 64))
    with torch.no_grad():
        for conv in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, spec.controlnet_output_std)
            conv.bias.normal_(0.0, spec.controlnet_output_std)
        # The conditioning embedding's last conv is zero-initialised too; without this the
        # control image would have no influence at all.
        out = controlnet.controlnet_cond_embedding.conv_out
        out.weight.normal_(0.0, spec.controlnet_output_std)
    return controlnet.eval()


def tiny_roberta(tokenizer, seed: int = 0):
    from transformers import RobertaConfig, RobertaModel

    _seeded(seed, "roberta")
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        # RoBERTa's positions start after the padding index, hence the +2.
        max_position_embeddings=tokenizer.model_max_length + 2, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return RobertaModel(config, add_pooling_layer=False).eval()


def tiny_resnet(seed: int = 0):
    from transformers import ResNetConfig, ResNetModel

    _seeded(seed, "resnet")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic")
    return ResNetModel(config).eval()


def tiny_dpt(seed: int = 0):
    from transformers import DPTConfig, DPTForDepthEstimation

    _seeded(seed, "dpt")
    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=64,
        patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        head_in_index=-1, is_hybrid=False,
        # DPT's default init (std 0.02) through this many small layers gives depth values of
        # ~1e-9: a flat map. A wider init gives maps that vary with the image, like real depth.
        initializer_range=0.1,
    )
    return DPTForDepthEstimation(config).eval()


def build_tiny_u2net(seed: int = 0) -> U2Net:
    """A tiny "custom" U2-Net (official module names, 4-16 channels, about 86k parameters) with
    deterministic random weights and batch-norm statistics: the same seed gives identical
    weights, and the global RNG is left untouched. Returned in eval mode."""
    model = U2Net(U2NetConfig(variant="custom", **TINY_U2NET_WIDTHS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                                    * (2.0 / fan_in) ** 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.05)
            elif isinstance(module, nn.BatchNorm2d):
                # Non-trivial statistics, so that eval-mode normalisation is really exercised.
                width = module.num_features
                module.weight.copy_(1.0 + 0.1 * torch.randn(width, generator=generator))
                module.bias.copy_(0.1 * torch.randn(width, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(width, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(width, generator=generator))
    return model.eval()


def tiny_rfnet(resnet_dir: Path, roberta_dir: Path, seed: int = 0):
    """An untrained tiny RFNet whose encoders start from the zoo's ResNet and RoBERTa folders.

    Its verdicts are random-weight verdicts (near-uniform probabilities); ``rfad-train rfnet``
    trains a real one.
    """
    from rfad.models.rfnet import RFNet, tiny_rfnet_config

    _seeded(seed, "rfnet")
    return RFNet.from_backbones(tiny_rfnet_config(), resnet_dir, roberta_dir).eval()


def save_sd_folder(folder: Path, tokenizer, text_encoder, unet, vae) -> None:
    """Write the diffusers layout of an SD-1.5 checkpoint (what ``save_pretrained`` of a pipeline gives)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG, indent=2) + "\n")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")


def build_tiny_zoo(out: str | os.PathLike, seed: int = 0, spec: TinyZooSpec = TinyZooSpec()) -> ModelSet:
    """Build every tiny model under ``seed`` and save the zoo to ``out``; returns its model set."""
    from transformers import DPTImageProcessor

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    clip_tokenizer = build_clip_tokenizer()
    text_encoder = tiny_text_encoder(clip_tokenizer, seed)
    vae = tiny_vae(seed, spec)
    unet = tiny_unet(4, seed, spec)
    save_sd_folder(root / "sd15", clip_tokenizer, text_encoder, unet, vae)
    save_sd_folder(root / "sd15-inpaint", clip_tokenizer, text_encoder, tiny_unet(9, seed, spec), vae)
    tiny_controlnet(unet, seed, spec).save_pretrained(root / "controlnet", safe_serialization=True)

    roberta_tokenizer = build_roberta_tokenizer()
    tiny_roberta(roberta_tokenizer, seed).save_pretrained(root / "roberta", safe_serialization=True)
    roberta_tokenizer.save_pretrained(root / "roberta")
    tiny_resnet(seed).save_pretrained(root / "resnet", safe_serialization=True)
    tiny_dpt(seed).save_pretrained(root / "dpt", safe_serialization=True)
    DPTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "dpt")
    build_tiny_u2net(seed * 100 + _SEED_OFFSETS["u2net"]).save_pretrained(root / "u2net")
    tiny_rfnet(root / "resnet", root / "roberta", seed).save_pretrained(root / "rfnet")
    roberta_tokenizer.save_pretrained(root / "rfnet")  # the judge's folder carries its caption tokenizer

    write_sample_products(root / "samples")
    model_set = ModelSet(
        sd=root / "sd15", controlnet=root / "controlnet", roberta=root / "roberta", resnet=root / "resnet",
        depth=root / "dpt", saliency=root / "u2net", rfnet=root / "rfnet",
    )
    model_set.write(root, description=f"rfad tiny zoo (random weights, seed {seed}); not for real images")
    return ModelSet.resolve(root)
