"""A tiny LoRA for the zoo's UNet, written in diffusers' LoRA file format (tests of LoRA fusing)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch


def write_tiny_lora(unet, path: str | os.PathLike, seed: int = 0, rank: int = 4, std: float = 0.2) -> Path:
    """Save a random-weight LoRA on the attention projections of ``unet`` to ``path`` (.safetensors).

    ``unet`` is left untouched (the adapter goes on a copy). peft initialises LoRA's
    B matrices to zero, which would make the LoRA a no-op; they are drawn at random instead.
    """
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    unet = copy.deepcopy(unet)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                     adapter_name="tiny_lora")
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, std)
    layers = get_peft_model_state_dict(unet, adapter_name="tiny_lora")
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name,
                                              safe_serialization=True)
    return path
