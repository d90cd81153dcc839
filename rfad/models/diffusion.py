"""Load the SD-1.5 + ControlNet components from local paths (folders or a single file).

The generation loop needs the components individually (it calls each through a runner), so
they are loaded one by one rather than as a diffusers pipeline. A single-file checkpoint goes
through diffusers' ``from_single_file`` with a local config folder (nothing is fetched), and a
LoRA is fused into the UNet and text encoder weights so that export and serving see plain
models.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from rfad.models.folders import ModelFolderError, check_model_folder, check_tokenizer_folder, loading
from rfad.models.model_set import ModelSet

SD_SUBFOLDERS = ("unet", "vae", "text_encoder")


@dataclass
class DiffusionModels:
    """The diffusion side of a deployment, ready for the torch runner.

    ``scheduler_config`` is the base model's scheduler config as a dict; the loop builds a
    ``DDIMScheduler`` from it per request (schedulers keep per-request state).
    """

    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    controlnet: torch.nn.Module
    scheduler_config: dict

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self.vae, "controlnet": self.controlnet}

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "DiffusionModels":
        # Only what is given: diffusers warns about "modules that should be kept in float32" whenever
        # a dtype keyword is present, even None, and a user cannot act on that warning.
        moves = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
        for module in self.modules.values():
            module.to(**moves)
        return self

    def freeze(self) -> "DiffusionModels":
        """Inference mode for every module: eval() and no parameter gradients."""
        for module in self.modules.values():
            module.eval().requires_grad_(False)
        return self


def check_sd_folder(path: str | os.PathLike) -> Path:
    """A diffusers SD-1.5 folder: model_index.json, unet/vae/text_encoder with weights, tokenizer, scheduler."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(f"base model: {folder} does not exist or is not a folder")
    problems = []
    if not (folder / "model_index.json").is_file():
        problems.append("model_index.json")
    for sub in SD_SUBFOLDERS:
        sub_folder = folder / sub
        if not sub_folder.is_dir():
            problems.append(f"{sub}/")
            continue
        try:
            check_model_folder(sub_folder, sub)
        except ModelFolderError as exc:
            problems.append(f"{sub}/ ({str(exc).partition('missing: ')[2]})")
    try:
        check_tokenizer_folder(folder / "tokenizer", "base model tokenizer")
    except ModelFolderError:
        problems.append("tokenizer/ (tokenizer.json or vocab.json + merges.txt)")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        problems.append("scheduler/scheduler_config.json")
    if problems:
        raise ModelFolderError(f"base model: {folder} is incomplete; missing: {', '.join(problems)}")
    return folder


def load_controlnet(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """A diffusers ControlNet folder (config.json + diffusion_pytorch_model.safetensors)."""
    from diffusers import ControlNetModel

    folder = check_model_folder(path, "ControlNet")
    with loading("ControlNet", folder):
        return ControlNetModel.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True, local_files_only=True)


def _load_from_folder(folder: Path, dtype: torch.dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    common = {"local_files_only": True, "use_safetensors": True}
    with loading("base model tokenizer", folder / "tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    with loading("base model text encoder", folder / "text_encoder"):
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype, **common)
    with loading("base model UNet", folder / "unet"):
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, **common)
    with loading("base model VAE", folder / "vae"):
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype, **common)
    with loading("base model scheduler", folder / "scheduler" / "scheduler_config.json"):
        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return tokenizer, text_encoder, unet, vae, scheduler_config


def _load_single_file(checkpoint: Path, config: Path | None, dtype: torch.dtype):
    """An original-format SD-1.5 checkpoint, converted by diffusers with a local config folder."""
    from diffusers import StableDiffusionPipeline

    if config is None:
        raise ModelFolderError(
            f"base model: {checkpoint} is a single-file checkpoint; pass --sd-config DIR, a diffusers SD-1.5 "
            "folder of the same architecture (its configs and tokenizer are used; nothing is downloaded)"
        )
    config = check_sd_folder(config)
    with loading("base model (single file)", checkpoint):
        pipe = StableDiffusionPipeline.from_single_file(
            str(checkpoint), config=str(config), local_files_only=True, torch_dtype=dtype,
            safety_checker=None, requires_safety_checker=False,
        )
        scheduler_config = json.loads((config / "scheduler" / "scheduler_config.json").read_text())
    return pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae, scheduler_config


def fuse_lora(models: DiffusionModels, lora: str | os.PathLike, scale: float) -> DiffusionModels:
    """Fuse LoRA weights (diffusers/kohya ``.safetensors``) into the UNet and text encoder at ``scale``.

    Fused rather than kept as adapters: exported graphs and TensorRT engines then carry plain
    weights, and the denoising step pays nothing for the LoRA.
    """
    from diffusers import StableDiffusionPipeline

    path = Path(lora)
    if not path.is_file():
        raise ModelFolderError(f"LoRA: {path} does not exist")
    if path.suffix != ".safetensors":
        raise ModelFolderError(f"LoRA: {path} must be a .safetensors file (pickled weights are not loaded)")
    # A pipeline object is only the vehicle for diffusers' LoRA loader (key conversion for
    # kohya/diffusers formats); the fused modules are the ones we hold.
    pipe = StableDiffusionPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=models.unet,
        scheduler=_ddim(models.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    with loading("LoRA", path):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="rfad_lora")
    pipe.fuse_lora(lora_scale=scale, adapter_names=["rfad_lora"])
    pipe.unload_lora_weights()
    return models


def _ddim(scheduler_config: dict):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler_config)


def load_diffusion_models(model_set: ModelSet, *, dtype: torch.dtype = torch.float32,
                          device: str | torch.device = "cpu") -> DiffusionModels:
    """Load tokenizer, text encoder, UNet, VAE and ControlNet of ``model_set``, frozen, on ``device``."""
    sd = model_set.require("sd")
    if sd.is_file():
        parts = _load_single_file(sd, model_set.sd_config, dtype)
    else:
        parts = _load_from_folder(check_sd_folder(sd), dtype)
    tokenizer, text_encoder, unet, vae, scheduler_config = parts
    controlnet = load_controlnet(model_set.require("controlnet"), dtype)
    models = DiffusionModels(tokenizer, text_encoder, unet, vae, controlnet, scheduler_config)
    if model_set.lora is not None:
        fuse_lora(models, model_set.lora, model_set.lora_scale)
    return models.to(device=device).freeze()
