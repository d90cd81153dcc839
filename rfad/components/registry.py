"""The one registry of served components: name, group, description and the spec each one has.

The component modules (:mod:`rfad.components.modules`, which the torch runner calls and the
export traces) are keyed by these names (a component without a module, or a module without a
component, is an error); the Triton repository writer, the judge ensemble and every runner read
the specs built here. Group ``diffusion`` needs the base models and the
ControlNet; group ``judge`` needs RFNet, depth and saliency (built only when the facts have an
RFNet width); group ``screen`` is an optional second RFNet that early screening judges
x0-previews with (the model set's ``screen_rfnet``; built only when the facts say it is there),
with the main RFNet's tensors, beside the same depth and saliency models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from rfad.components.specs import ComponentSpec, ModelFacts, TensorSpec

GROUPS = ("diffusion", "judge", "screen")


@dataclass(frozen=True)
class Component:
    name: str
    group: str
    description: str
    tensors: Callable[[ModelFacts], tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]  # (inputs, outputs)
    spatial: bool = True  # H/W may vary (False: only the batch axis is dynamic)

    def spec(self, facts: ModelFacts) -> ComponentSpec:
        inputs, outputs = self.tensors(facts)
        uses_tokens = any("L" in t.shape for t in inputs + outputs)
        return ComponentSpec(self.name, inputs, outputs, self.description, self.spatial,
                             tokens=facts.caption_tokens if uses_tokens else None, latent_factor=facts.latent_factor)


COMPONENTS: dict[str, Component] = {}


def _register(name: str, group: str, description: str, spatial: bool = True):
    def register(tensors):
        COMPONENTS[name] = Component(name, group, description, tensors, spatial)
        return tensors
    return register


def components_in(group: str) -> tuple[str, ...]:
    if group not in GROUPS:
        raise ValueError(f"group: {group!r} is not one of {', '.join(GROUPS)}")
    return tuple(name for name, component in COMPONENTS.items() if component.group == group)


UNET_MODES = ("merged", "separate")


def served_components(available, unet_mode: str = "merged") -> list[str]:
    """Of the component names ``available``, in their order, those a Triton repository written with
    ``--unet unet_mode`` serves: ``merged`` serves ``controlnet_unet`` (the residuals never leave
    the graph) and not ``controlnet`` and ``unet``; ``separate`` the other way round."""
    if unet_mode not in UNET_MODES:
        raise ValueError(f"--unet: {unet_mode!r} is not merged or separate")
    skip = {"controlnet", "unet"} if unet_mode == "merged" else {"controlnet_unet"}
    return [name for name in available if name not in skip]


def component_specs(facts: ModelFacts, renames: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, ComponentSpec]:
    """Every registered component the facts allow (judge ones only with ``facts.rfnet_width``, screen
    ones only with ``facts.screen_rfnet``), by name.

    ``renames``: component -> {tensor key -> wire name}, for a deployment that calls some
    tensors otherwise; everything downstream reads the names from the specs.
    """
    renames = dict(renames or {})
    unknown = sorted(set(renames) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"renames: no components {unknown} (registered: {', '.join(COMPONENTS)})")
    provided = {"diffusion": True, "judge": facts.rfnet_width is not None,
                "screen": facts.rfnet_width is not None and facts.screen_rfnet}
    return {name: component.spec(facts).renamed(renames.get(name, {}))
            for name, component in COMPONENTS.items() if provided[component.group]}


# --- the tensors of each component ---------------------------------------------------------

def _f32(role: str, shape: tuple, index: int | None = None) -> TensorSpec:
    return TensorSpec(role, "float32", shape, index=index)


def _latent(channels: int, factor: int = 1) -> tuple:
    suffix = "" if factor == 1 else f"/{factor}"
    return ("B", channels, "h" + suffix, "w" + suffix)


def _image(role: str, channels: int) -> TensorSpec:
    return _f32(role, ("B", channels, "H", "W"))


def _text(f: ModelFacts) -> TensorSpec:
    return _f32("encoder_hidden_states", ("B", f.text_tokens, f.text_dim))


def _residuals(f: ModelFacts) -> tuple[TensorSpec, ...]:
    downs = tuple(_f32("down_res", _latent(c, k), index=i) for i, (c, k) in enumerate(f.down_residuals))
    return downs + (_f32("mid_res", _latent(*f.mid_residual)),)


def _control(f: ModelFacts) -> tuple[TensorSpec, ...]:
    """What the ControlNet reads besides its sample: timestep, text, control image, per-sample scale."""
    return (_f32("timestep", ("B",)), _text(f), _image("controlnet_cond", 3), _f32("conditioning_scale", ("B",)))


def _noise(f: ModelFacts) -> tuple[TensorSpec, ...]:
    return (_f32("noise_pred", _latent(f.latent_channels)),)


@_register("text_encoder", "diffusion", "CLIP text encoder: token ids -> last hidden states", spatial=False)
def _text_encoder(f: ModelFacts):
    return ((TensorSpec("input_ids", "int64", ("B", f.text_tokens)),),
            (_f32("text_embeddings", ("B", f.text_tokens, f.text_dim)),))


@_register("controlnet", "diffusion", "ControlNet: residuals for the UNet, multiplied by conditioning_scale")
def _controlnet(f: ModelFacts):
    return (_f32("sample", _latent(f.latent_channels)),) + _control(f), _residuals(f)


@_register("unet", "diffusion", "UNet with the ControlNet residuals as inputs")
def _unet(f: ModelFacts):
    return (_f32("sample", _latent(f.unet_in_channels)), *_control(f)[:2]) + _residuals(f), _noise(f)


@_register("controlnet_unet", "diffusion", "ControlNet and UNet in one graph: the residuals never leave it")
def _controlnet_unet(f: ModelFacts):
    inputs = (_f32("sample", _latent(f.latent_channels)),)
    if f.unet_in_channels != f.latent_channels:  # inpainting UNet: mask + masked-image latents
        inputs += (_f32("unet_extra", _latent(f.unet_in_channels - f.latent_channels)),)
    return inputs + _control(f), _noise(f)


@_register("vae_encoder", "diffusion", "VAE encoder: images in [-1, 1] -> latent mean and std, scaled by the VAE factor")
def _vae_encoder(f: ModelFacts):
    return (_image("images", 3),), (_f32("latent_mean", _latent(f.latent_channels)),
                                    _f32("latent_std", _latent(f.latent_channels)))


@_register("vae_decoder", "diffusion", "VAE decoder: scaled latents -> images in about [-1, 1]")
def _vae_decoder(f: ModelFacts):
    return (_f32("latents", _latent(f.latent_channels)),), (_image("images", 3),)


def _judge_image(role: str, channels: int, f: ModelFacts) -> TensorSpec:
    """An image at the judge's fixed working size (rfad.pipeline.judge_view says why)."""
    return _f32(role, ("B", channels, f.judge_size, f.judge_size))


@_register("depth", "judge", "DPT depth, [0,1] in and out, at the judge's size", spatial=False)
def _depth(f: ModelFacts):
    return (_judge_image("images", 3, f),), (_judge_image("depth_map", 1, f),)


@_register("saliency", "judge", "U2-Net saliency, [0,1], at the judge's size", spatial=False)
def _saliency(f: ModelFacts):
    return (_judge_image("images", 3, f),), (_judge_image("saliency_map", 1, f),)


@_register("rfnet_text", "judge", "RFNet caption encoder (once per request)", spatial=False)
def _rfnet_text(f: ModelFacts):
    return ((TensorSpec("input_ids", "int64", ("B", "L")), TensorSpec("attention_mask", "int64", ("B", "L"))),
            (_f32("caption_embeddings", ("B", "L", f.rfnet_width)),))


@_register("rfnet", "judge", "RFNet judge: class probabilities", spatial=False)
def _rfnet(f: ModelFacts):
    inputs = (_judge_image("product_image", 3, f), _judge_image("generated_image", 3, f),
              _judge_image("depth_map", 1, f), _judge_image("saliency_map", 1, f),
              _f32("caption_embeddings", ("B", "L", f.rfnet_width)), TensorSpec("caption_mask", "int64", ("B", "L")))
    return inputs, (_f32("probabilities", ("B", f.num_classes)),)


# Early screening's own RFNet (optional): the same graphs as the judge's, of another checkpoint.
_register("screen_rfnet_text", "screen", "Screening RFNet's caption encoder (once per request)", spatial=False)(
    _rfnet_text)
_register("screen_rfnet", "screen", "Screening RFNet: class probabilities of x0-previews", spatial=False)(_rfnet)
