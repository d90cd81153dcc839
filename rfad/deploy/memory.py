"""The arithmetic the profiles were sized with: weights at SD-1.5 sizes, and the python backend's
shared memory, from the component specs.

Both are estimates by arithmetic, not measurements: weights are parameter counts times bytes
per parameter (activation peaks, TensorRT workspaces and CUDA contexts come on top and are not
measured here); shared memory is the largest set of tensors one python model instance holds at
once (one BLS call's inputs and outputs, or its own request and response), at the profile's
largest batch and canvas. ``tests/test_profiles.py`` recounts the parameters from the
architectures themselves and checks every profile's /dev/shm against :func:`shm_need`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rfad.components.registry import component_specs
from rfad.components.specs import ComponentSpec, ModelFacts
from rfad.contract import MAX_IMAGE_BYTES
from rfad.deploy.profiles import DeploymentProfile

# Parameters of each served component at the published sizes the paper deploys: SD-1.5 UNet
# (859.5M) and a ControlNet made from it (361.3M), its VAE (83.7M: encoder + quant conv, decoder +
# post-quant conv) and CLIP ViT-L/14 text encoder (123.1M), DPT-Large (343.0M), U2-Net (44.0M), and
# RFNet at its default config: rfnet_text is RoBERTa-base + the caption projection (124.3M), rfnet
# the shared ResNet-50, filter, fusion and head (34.4M). Counted from the architectures
# (diffusers / transformers configs, rfad's own modules) on the meta device.
PARAMETERS = {
    "text_encoder": 123_060_480,
    "unet": 859_520_964,
    "controlnet": 361_279_120,
    "vae_encoder": 34_163_664,
    "vae_decoder": 49_490_199,
    "depth": 343_030_465,
    "saliency": 44_009_869,
    "rfnet_text": 124_349_568,
    "rfnet": 34_419_781,
}
PARAMETERS["controlnet_unet"] = PARAMETERS["controlnet"] + PARAMETERS["unet"]

# The per-checkpoint sizes of SD-1.5 + ControlNet v1.1 that the specs need (what `rfad-export
# onnx` probes from the real models): CLIP width 768; the ControlNet's 12 down residuals and mid.
SD15_FACTS = ModelFacts(
    text_dim=768, text_tokens=77, latent_channels=4, unet_in_channels=4,
    down_residuals=((320, 1),) * 3 + ((320, 2),) + ((640, 2),) * 2 + ((640, 4),) + ((1280, 4),) * 2 + ((1280, 8),) * 3,
    mid_residual=(1280, 8), rfnet_width=384, caption_tokens=64,
)

BYTES_PER_PARAMETER = {"fp32": 4, "fp16": 2}
SERVED = {
    "merged": ("text_encoder", "controlnet_unet", "vae_encoder", "vae_decoder", "depth", "saliency", "rfnet_text", "rfnet"),
    "separate": ("text_encoder", "controlnet", "unet", "vae_encoder", "vae_decoder", "depth", "saliency", "rfnet_text",
                 "rfnet"),
}
_ITEMSIZE = {"float32": 4, "float16": 2, "int64": 8, "int32": 4}


def weight_bytes(profile: DeploymentProfile, unet_mode: str = "merged") -> dict[str, int]:
    """Bytes of weights per served component, times its instance count (every instance holds its
    own copy: an onnxruntime session per python instance; counted the same for TensorRT engines,
    which is the upper bound)."""
    per = BYTES_PER_PARAMETER[profile.precision]
    return {name: PARAMETERS[name] * per * profile.component(name).count for name in SERVED[unet_mode]}


def exchange_bytes(spec: ComponentSpec, batch: int, side: int) -> int:
    """Bytes of one call's inputs and outputs (what a BLS call or a python model holds at once)."""
    return sum(math.prod(spec.shape_of(tensor, batch, side, side)) * _ITEMSIZE[tensor.dtype]
               for tensor in spec.inputs + spec.outputs)


@dataclass(frozen=True)
class ShmNeed:
    """Shared memory the python model instances of a repository may hold at once, by instance group."""

    parts: tuple[tuple[str, int, int], ...]  # (model, instances, peak bytes per instance)

    @property
    def total(self) -> int:
        return sum(count * peak for _, count, peak in self.parts)


def shm_need(profile: DeploymentProfile, backend: str | None = None, unet_mode: str = "merged",
             facts: ModelFacts = SD15_FACTS) -> ShmNeed:
    """Worst-case /dev/shm of a repository written with ``profile`` (at SD-1.5 sizes).

    - ``rfad_pipeline``, per instance: its request (the product image, at most the contract's
      MAX_IMAGE_BYTES) and response (PNG images, at most raw size each) plus its largest BLS
      call: the largest component call at the pipeline's largest batch and the canvas size;
    - with the ``python`` backend, every component instance: its own largest call;
    - ``rfad_judge_prepare``: up to ``judge_images_cap`` encoded images and the product in,
      RFNet's two images and the caption tokens out.
    Each instance's region grows in ``growth_byte_size`` steps, so peaks are rounded up to them.
    """
    backend = backend or profile.backend
    specs = component_specs(facts)
    side, batch = profile.pipeline.canvas_size, profile.pipeline.largest_component_batch
    growth = profile.shm.growth_byte_size

    def rounded(size: int) -> int:
        return max(profile.shm.default_byte_size, math.ceil(size / growth) * growth)

    # The judge only where the models have one; early screening's own RFNet where they have that.
    served = [name for name in SERVED[unet_mode] + ("screen_rfnet_text", "screen_rfnet") if name in specs]
    calls = {name: exchange_bytes(specs[name], batch, side) for name in served}
    response = profile.pipeline.candidates_cap * side * side * 3 + MAX_IMAGE_BYTES
    parts = [("rfad_pipeline", profile.pipeline.instances, rounded(max(calls.values()) + response))]
    if backend == "python":
        parts += [(name, profile.component(name).count, rounded(calls[name])) for name in served]
    if "rfnet" in specs:
        rfnet = specs["rfnet"]
        prepared = sum(math.prod(rfnet.shape_of(rfnet.input(key), profile.pipeline.judge_images_cap, side, side)) * 4
                       for key in ("product_image", "generated_image"))
        judge_in = (profile.pipeline.judge_images_cap + 1) * MAX_IMAGE_BYTES
        parts.append(("rfad_judge_prepare", 1, rounded(judge_in + prepared)))
    return ShmNeed(tuple(parts))
