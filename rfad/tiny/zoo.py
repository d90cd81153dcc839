"""The random-weight model zoo: the real architectures in the real folder layouts, at a chosen shape.

Tests, the demo and CI have no model hub, so they build SD-1.5-shaped models small enough for
two CPU cores (shape ``tiny``) and save them exactly as real weights are laid out on disk.
Everything downstream (loading, the generation loop, export, serving) then runs the same code
paths it runs for real weights. The same builders, at shape ``sd15``
(:data:`rfad.tiny.shapes.SD15_SHAPE`), write a twin of production at the published sizes.
Same seed and shape, same weights: each model is built under its own seed.

Layout written by :func:`build_tiny_zoo`::

    zoo/
      rfad-models.json      the model set (roles -> folders), read by --models zoo
      parameters.json       parameter count per model (and the published count it was checked against)
      sd15/                 diffusers SD-1.5 folder: 4-channel UNet, VAE (factor 8), CLIP, tokenizer, scheduler
      sd15-inpaint/         the same with a 9-channel inpainting UNet (shapes with inpaint_unet)
      controlnet/           ControlNet (canny role) built from the 4-channel UNet, non-zero output convs
      roberta/              RoBERTa + byte-level BPE tokenizer (RFNet's text backbone)
      resnet/               ResNet (RFNet's image backbone)
      dpt/                  DPT depth model + image processor config
      u2net/                U2-Net saliency model (official parameter names)
      rfnet/                RFNet judge, UNTRAINED (backbones from resnet/ and roberta/) + caption tokenizer
      samples/              sample product cut-outs (RGBA PNG) drawn in code

Models are built, saved and freed one at a time (at most the UNet and its ControlNet are held
together), so a zoo needs about the memory of its two largest models, whatever its size.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from rfad.models.model_set import ModelSet
from rfad.models.u2net import U2Net
from rfad.models.u2net_config import U2NetConfig
from rfad.tiny.init import random_module
from rfad.tiny.products import write_sample_products
from rfad.tiny.shapes import PARAMETER_TOLERANCE, SD15_SCHEDULER_CONFIG, ZooShape, tiny_shape
from rfad.tiny.tokenizers import build_clip_tokenizer, build_roberta_tokenizer

TINY = tiny_shape()
CROSS_ATTENTION_DIM = TINY.unet["cross_attention_dim"]
# Seeds per model, offset from the zoo seed, so that adding a model never changes the others.
_SEED_OFFSETS = {"clip": 1, "unet": 2, "unet_inpaint": 3, "vae": 4, "controlnet": 5, "roberta": 6,
                 "resnet": 7, "dpt": 8, "u2net": 9, "rfnet": 10}


class ParameterCountError(RuntimeError):
    """A model built at a shape does not have the published parameter count of that shape."""


def _seed(seed: int, name: str) -> int:
    return seed * 100 + _SEED_OFFSETS[name]


def tiny_text_encoder(tokenizer, seed: int = 0, shape: ZooShape = TINY):
    """CLIP text model; token ids (and, where the shape leaves them out, vocabulary and positions)
    from ``tokenizer``, so its ids are always in range."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**{
        "vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length, **shape.clip,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    })
    return random_module(lambda: CLIPTextModel(config), _seed(seed, "clip"), shape.fast_init)


def tiny_unet(in_channels: int = 4, seed: int = 0, shape: ZooShape = TINY):
    from diffusers import UNet2DConditionModel

    name = "unet" if in_channels == 4 else "unet_inpaint"
    return random_module(lambda: UNet2DConditionModel(in_channels=in_channels, **shape.unet), _seed(seed, name),
                         shape.fast_init)


def tiny_vae(seed: int = 0, shape: ZooShape = TINY):
    from diffusers import AutoencoderKL

    return random_module(lambda: AutoencoderKL(**shape.vae), _seed(seed, "vae"), shape.fast_init)


def tiny_controlnet(unet, seed: int = 0, shape: ZooShape = TINY):
    """A ControlNet from the 4-channel UNet whose residual outputs are NOT zero.

    ``ControlNetModel.from_unet`` zero-initialises the output convolutions (right for training
    from scratch), which would make every residual 0 and every parity test pass trivially.
    """
    from diffusers import ControlNetModel

    from rfad.tiny.init import seeded_fill

    def build():
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=shape.controlnet_embedding)

    seed = _seed(seed, "controlnet")
    if shape.fast_init:
        from transformers.initialization import no_init_weights

        # Every weight gets its own values, the layers copied from the UNet included: a real
        # ControlNet is trained away from its UNet, and copies equal to the UNet's would let the
        # ONNX exporter deduplicate them (the merged graph would come out 1.2 GB lighter than real).
        with no_init_weights():
            controlnet = build()
        seeded_fill(controlnet, seed)
        generator = torch.Generator().manual_seed(seed)
    else:
        controlnet, generator = random_module(build, seed, fast=False), None  # None: the global RNG, seeded
    std = shape.controlnet_output_std
    with torch.no_grad():
        for conv in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, std, generator=generator)
            conv.bias.normal_(0.0, std, generator=generator)
        # The conditioning embedding's last conv is zero-initialised too; without this the
        # control image would have no influence at all.
        controlnet.controlnet_cond_embedding.conv_out.weight.normal_(0.0, std, generator=generator)
    return controlnet.eval()


def tiny_roberta(tokenizer, seed: int = 0, shape: ZooShape = TINY):
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(**{
        # RoBERTa's positions start after the padding index, hence the +2.
        "vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length + 2, **shape.roberta,
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    })
    return random_module(lambda: RobertaModel(config, add_pooling_layer=False), _seed(seed, "roberta"),
                         shape.fast_init)


def tiny_resnet(seed: int = 0, shape: ZooShape = TINY):
    from transformers import ResNetConfig, ResNetModel

    return random_module(lambda: ResNetModel(ResNetConfig(**shape.resnet)), _seed(seed, "resnet"), shape.fast_init)


def tiny_dpt(seed: int = 0, shape: ZooShape = TINY):
    from transformers import DPTConfig, DPTForDepthEstimation

    return random_module(lambda: DPTForDepthEstimation(DPTConfig(**shape.dpt)), _seed(seed, "dpt"), shape.fast_init)


def build_tiny_u2net(seed: int = 0, shape: ZooShape = TINY) -> U2Net:
    """A U2-Net of the shape's widths (tiny: official module names, 4-16 channels, about 86k
    parameters) with deterministic random weights and batch-norm statistics: the same seed gives
    identical weights, and the global RNG is left untouched. Returned in eval mode."""
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every parameter and statistic is written below
        model = U2Net(U2NetConfig(**shape.u2net))
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


def tiny_rfnet(resnet_dir: Path, roberta_dir: Path, seed: int = 0, shape: ZooShape = TINY):
    """An untrained RFNet whose encoders start from the zoo's ResNet and RoBERTa folders.

    Its verdicts are random-weight verdicts (near-uniform probabilities); ``rfad-train rfnet``
    trains a real one. Built with the library init at every shape: the backbones, most of its
    weights, are loaded over it.
    """
    from rfad.models.rfnet import RFNet

    torch.manual_seed(_seed(seed, "rfnet"))
    return RFNet.from_backbones(shape.rfnet(), resnet_dir, roberta_dir).eval()


def _write_sd_skeleton(folder: Path, tokenizer) -> None:
    """Everything of a diffusers SD-1.5 folder but the weights: tokenizer, scheduler, model_index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / "tokenizer")
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


def save_sd_folder(folder: Path, tokenizer, text_encoder, unet, vae) -> None:
    """Write the diffusers layout of an SD-1.5 checkpoint (what ``save_pretrained`` of a pipeline gives)."""
    _write_sd_skeleton(folder, tokenizer)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_parameter_counts(counts: dict[str, int], shape: ZooShape) -> dict[str, dict]:
    """``{role: {"parameters", "published"}}``; a count off its published value by more than
    :data:`PARAMETER_TOLERANCE` is a :class:`ParameterCountError` (the shape is not the published one)."""
    report = {}
    for role, count in counts.items():
        published = shape.published_parameters.get(role)
        if published is not None and abs(count - published) > PARAMETER_TOLERANCE * published:
            raise ParameterCountError(f"shape {shape.name}: {role} has {count:,} parameters, published {published:,}")
        report[role] = {"parameters": count, "published": published}
    return report


def shape_parameter_counts(shape: ZooShape) -> dict[str, int]:
    """Parameter count per model of ``shape``, from models built on the meta device (no memory,
    seconds at any size): what a zoo of that shape will hold, before it is built."""
    from rfad.models.rfnet import RFNet

    with torch.device("meta"):
        unet, roberta, resnet = tiny_unet(4, 0, shape), tiny_roberta(build_roberta_tokenizer(), 0, shape), tiny_resnet(0, shape)
        rfnet_config = shape.rfnet()
        rfnet_config.resnet, rfnet_config.roberta = resnet.config.to_dict(), roberta.config.to_dict()
        counts = {
            "text_encoder": parameter_count(tiny_text_encoder(build_clip_tokenizer(), 0, shape)),
            "vae": parameter_count(tiny_vae(0, shape)),
            "unet": parameter_count(unet),
            "controlnet": parameter_count(tiny_controlnet(unet, 0, shape)),
            "roberta": parameter_count(roberta),
            "resnet": parameter_count(resnet),
            "depth": parameter_count(tiny_dpt(0, shape)),
            "saliency": parameter_count(build_tiny_u2net(0, shape)),
            "rfnet": parameter_count(RFNet(rfnet_config)),
        }
        if shape.inpaint_unet:
            counts["unet_inpaint"] = parameter_count(tiny_unet(9, 0, shape))
    return counts


def zoo_disk_need(shape: ZooShape, out: str | os.PathLike) -> tuple[int, int]:
    """(bytes of fp32 weights a zoo of ``shape`` writes, bytes free on the disk under ``out``),
    known before anything is built."""
    needed = 4 * sum(shape_parameter_counts(shape).values())
    existing = Path(out).resolve()
    while not existing.exists():
        existing = existing.parent
    return needed, shutil.disk_usage(existing).free


def _saved(counts: dict[str, int], role: str, model, folder: Path, echo) -> None:
    """Count, save (safetensors) and report one model; the caller drops its reference after."""
    counts[role] = parameter_count(model)
    model.save_pretrained(folder)  # safetensors: the default of diffusers, transformers and rfad's models
    if echo is not None:
        echo(f"  {role:<13} {counts[role] / 1e6:9.2f}M parameters -> {folder}")


def build_tiny_zoo(out: str | os.PathLike, seed: int = 0, shape: ZooShape = TINY, echo=None) -> ModelSet:
    """Build every model of ``shape`` under ``seed`` and save the zoo to ``out``; returns its model set.

    ``echo``: called with one line per model saved (None: silent).
    """
    from transformers import DPTImageProcessor

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    clip_tokenizer = build_clip_tokenizer()
    sd = root / "sd15"
    _write_sd_skeleton(sd, clip_tokenizer)
    _saved(counts, "text_encoder", tiny_text_encoder(clip_tokenizer, seed, shape), sd / "text_encoder", echo)
    _saved(counts, "vae", tiny_vae(seed, shape), sd / "vae", echo)
    unet = tiny_unet(4, seed, shape)
    _saved(counts, "unet", unet, sd / "unet", echo)
    controlnet = tiny_controlnet(unet, seed, shape)
    del unet
    _saved(counts, "controlnet", controlnet, root / "controlnet", echo)
    del controlnet
    gc.collect()
    if shape.inpaint_unet:
        shutil.copytree(sd, root / "sd15-inpaint", ignore=shutil.ignore_patterns("unet"), dirs_exist_ok=True)
        _saved(counts, "unet_inpaint", tiny_unet(9, seed, shape), root / "sd15-inpaint" / "unet", echo)
        gc.collect()

    roberta_tokenizer = build_roberta_tokenizer()
    _saved(counts, "roberta", tiny_roberta(roberta_tokenizer, seed, shape), root / "roberta", echo)
    roberta_tokenizer.save_pretrained(root / "roberta")
    _saved(counts, "resnet", tiny_resnet(seed, shape), root / "resnet", echo)
    _saved(counts, "depth", tiny_dpt(seed, shape), root / "dpt", echo)
    DPTImageProcessor(size={"height": shape.depth_size, "width": shape.depth_size}).save_pretrained(root / "dpt")
    _saved(counts, "saliency", build_tiny_u2net(_seed(seed, "u2net"), shape), root / "u2net", echo)
    gc.collect()
    _saved(counts, "rfnet", tiny_rfnet(root / "resnet", root / "roberta", seed, shape), root / "rfnet", echo)
    roberta_tokenizer.save_pretrained(root / "rfnet")  # the judge's folder carries its caption tokenizer
    gc.collect()

    report = check_parameter_counts(counts, shape)
    (root / "parameters.json").write_text(json.dumps({"shape": shape.name, "models": report}, indent=2) + "\n")
    write_sample_products(root / "samples")
    model_set = ModelSet(
        sd=root / "sd15", controlnet=root / "controlnet", roberta=root / "roberta", resnet=root / "resnet",
        depth=root / "dpt", saliency=root / "u2net", rfnet=root / "rfnet",
    )
    model_set.write(root, description=f"rfad {shape.description} (shape {shape.name}, seed {seed}); "
                                      "not for real images")
    return ModelSet.resolve(root)
