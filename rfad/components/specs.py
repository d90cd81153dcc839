"""One declaration per served component: tensor names, dtypes and symbolic shapes.

ONNX export (names, dynamic axes, sample inputs), TensorRT optimisation profiles, the Triton
``config.pbtxt`` of each component and the runners' calls all read these declarations, so a
new component or a renamed tensor is a change here. Torch-free: the BLS model and tools read
it without loading any model.

Shapes use symbols: ``B`` batch, ``H``/``W`` image pixels, ``h``/``w`` latent (H/8, W/8),
``h/2``.. for the ControlNet's coarser residuals, ``L`` caption tokens; ints are fixed sizes.
The facts that vary per checkpoint (text width, residual channels, UNet input channels, RFNet
width) come in a :class:`ModelFacts`, read from the models once at export time and stored in
the export manifest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from rfad.contract import MAX_COMPONENT_BATCH

LATENT_FACTOR = 8  # SD-1.5's VAE downscale


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, int64
    shape: tuple  # symbols (str) and ints

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> symbol for every symbolic axis (the ONNX exporter's ``dynamic_axes``)."""
        return {i: d.replace("/", "_") for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str = ""
    spatial: bool = True  # H/W may vary (False: only the batch axis is dynamic)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes for t in self.inputs + self.outputs if t.dynamic_axes}

    def shape_of(self, tensor: TensorSpec, batch: int, height: int, width: int, tokens: int = 77) -> tuple[int, ...]:
        """Concrete shape of ``tensor`` for an image of ``height`` x ``width`` pixels."""
        return tuple(resolve_dim(d, batch, height, width, tokens) for d in tensor.shape)

    def input_shapes(self, batch: int, height: int, width: int, tokens: int = 77) -> dict[str, tuple[int, ...]]:
        return {t.name: self.shape_of(t, batch, height, width, tokens) for t in self.inputs}

    def profile(self, batch: tuple[int, int, int] = (1, 2, MAX_COMPONENT_BATCH), image: tuple[int, int, int] = (256, 512, 768),
                tokens: int = 77) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """TensorRT optimisation profile: input name -> (min, opt, max) shapes over batch and square image sizes."""
        sizes = image if self.spatial else (image[1],) * 3
        return {
            t.name: tuple(self.shape_of(t, b, s, s, tokens) for b, s in zip(batch, sizes))  # type: ignore[misc]
            for t in self.inputs
        }

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_dim(dim, batch: int, height: int, width: int, tokens: int = 77) -> int:
    """Value of one shape symbol."""
    if isinstance(dim, int):
        return dim
    base, _, divisor = dim.partition("/")
    value = {"B": batch, "H": height, "W": width, "h": height // LATENT_FACTOR, "w": width // LATENT_FACTOR,
             "L": tokens}[base]
    # Strided convs round up: a 7-px map halves to 4 (ceil), as the UNet's downsamplers do.
    return math.ceil(value / int(divisor)) if divisor else value


@dataclass(frozen=True)
class ModelFacts:
    """Per-checkpoint sizes the specs need (read from the loaded models at export time)."""

    text_dim: int  # CLIP hidden size (768 for SD-1.5)
    text_tokens: int = 77
    latent_channels: int = 4
    unet_in_channels: int = 4  # 9 for an inpainting UNet
    # ControlNet residuals: (channels, downscale vs the latent) per down residual; mid last.
    down_residuals: tuple[tuple[int, int], ...] = ()
    mid_residual: tuple[int, int] = (1280, 8)
    rfnet_width: int | None = None  # None: no judge components
    caption_tokens: int = 64

    @classmethod
    def from_dict(cls, values: dict) -> "ModelFacts":
        values = dict(values)
        values["down_residuals"] = tuple(tuple(r) for r in values.get("down_residuals", ()))
        values["mid_residual"] = tuple(values.get("mid_residual", (1280, 8)))
        return cls(**values)


def _latent(channels: int, factor: int = 1) -> tuple:
    suffix = "" if factor == 1 else f"/{factor}"
    return ("B", channels, "h" + suffix, "w" + suffix)


def residual_specs(facts: ModelFacts) -> tuple[TensorSpec, ...]:
    downs = tuple(TensorSpec(f"down_res_{i}", "float32", _latent(c, f)) for i, (c, f) in enumerate(facts.down_residuals))
    return downs + (TensorSpec("mid_res", "float32", _latent(*facts.mid_residual)),)


def component_specs(facts: ModelFacts) -> dict[str, ComponentSpec]:
    """Every component of a deployment, by name (judge components only when ``facts.rfnet_width``)."""
    text = TensorSpec("encoder_hidden_states", "float32", ("B", facts.text_tokens, facts.text_dim))
    sample = TensorSpec("sample", "float32", _latent(facts.latent_channels))
    timestep = TensorSpec("timestep", "float32", ("B",))
    control = TensorSpec("controlnet_cond", "float32", ("B", 3, "H", "W"))
    scale = TensorSpec("conditioning_scale", "float32", ("B",))
    noise = TensorSpec("noise_pred", "float32", _latent(facts.latent_channels))
    residuals = residual_specs(facts)
    unet_sample = TensorSpec("sample", "float32", _latent(facts.unet_in_channels))
    merged_inputs = (sample,)
    if facts.unet_in_channels != facts.latent_channels:
        merged_inputs += (TensorSpec("unet_extra", "float32", _latent(facts.unet_in_channels - facts.latent_channels)),)
    images = TensorSpec("images", "float32", ("B", 3, "H", "W"))
    specs = [
        ComponentSpec("text_encoder", (TensorSpec("input_ids", "int64", ("B", facts.text_tokens)),),
                      (TensorSpec("text_embeddings", "float32", ("B", facts.text_tokens, facts.text_dim)),),
                      "CLIP text encoder: token ids -> last hidden states", spatial=False),
        ComponentSpec("controlnet", (sample, timestep, text, control, scale), residuals,
                      "ControlNet: residuals for the UNet, multiplied by conditioning_scale"),
        ComponentSpec("unet", (unet_sample, timestep, text) + residuals, (noise,),
                      "UNet with the ControlNet residuals as inputs"),
        ComponentSpec("controlnet_unet", merged_inputs + (timestep, text, control, scale), (noise,),
                      "ControlNet and UNet in one graph: the residuals never leave it"),
        ComponentSpec("vae_encoder", (images,), (TensorSpec("latent_mean", "float32", _latent(facts.latent_channels)),
                                                 TensorSpec("latent_std", "float32", _latent(facts.latent_channels))),
                      "VAE encoder: images in [-1, 1] -> latent mean and std, scaled by the VAE factor"),
        ComponentSpec("vae_decoder", (TensorSpec("latents", "float32", _latent(facts.latent_channels)),),
                      (TensorSpec("images", "float32", ("B", 3, "H", "W")),),
                      "VAE decoder: scaled latents -> images in about [-1, 1]"),
    ]
    if facts.rfnet_width is not None:
        unit = lambda name, c: TensorSpec(name, "float32", ("B", c, "H", "W"))  # noqa: E731
        caption = TensorSpec("caption_embeddings", "float32", ("B", "L", facts.rfnet_width))
        mask = TensorSpec("caption_mask", "int64", ("B", "L"))
        specs += [
            ComponentSpec("depth", (unit("images", 3),), (unit("depth_map", 1),), "DPT depth, [0,1] in and out"),
            ComponentSpec("saliency", (unit("images", 3),), (unit("saliency_map", 1),), "U2-Net saliency, [0,1]"),
            ComponentSpec("rfnet_text", (TensorSpec("input_ids", "int64", ("B", "L")), TensorSpec("attention_mask", "int64", ("B", "L"))),
                          (caption,), "RFNet caption encoder (once per request)", spatial=False),
            ComponentSpec("rfnet", (unit("product_image", 3), unit("generated_image", 3), unit("depth_map", 1),
                                    unit("saliency_map", 1), caption, mask),
                          (TensorSpec("probabilities", "float32", ("B", 5)),), "RFNet judge: class probabilities"),
        ]
    return {spec.name: spec for spec in specs}

