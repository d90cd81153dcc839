"""What a served component is: its tensors (roles, wire names, dtypes, symbolic shapes) and the
per-checkpoint facts its shapes come from.

ONNX export (names, dynamic axes, sample inputs), TensorRT optimisation profiles, the Triton
``config.pbtxt`` of each component and the runners' calls all read these declarations
(:mod:`rfad.components.registry` builds them), so a new component or a renamed tensor is a
change in one place. Torch-free: the BLS model and tools read it without loading any model.

A tensor has a ``role``, the stable key the runners, the component modules and python steps use
(``sample``, ``down_res`` with an index, ``probabilities``), and a ``name``, what the ONNX graph,
the Triton config and a BLS request call it; the name is the role unless a deployment renames
it, so renaming a tensor changes its spec and nothing else.

Shapes use symbols: ``B`` batch, ``H``/``W`` image pixels, ``h``/``w`` latent (H/f, W/f, f the VAE's factor: 8 for SD-1.5),
``h/2``.. for the ControlNet's coarser residuals, ``L`` caption tokens (its value is the spec's
``tokens``); ints are fixed sizes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Mapping, Sequence

from rfad.contract import CLASS_NAMES

LATENT_FACTOR = 8  # SD-1.5's VAE downscale, the default of a spec's latent_factor


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``index`` numbers the tensors of a list-valued role (the ControlNet's
    down residuals); ``name`` defaults to the :attr:`key` (the role, ``role_<index>`` for those)."""

    role: str
    dtype: str  # numpy dtype name: float32, int64
    shape: tuple  # symbols (str) and ints
    name: str = ""
    index: int | None = None

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.key)

    @property
    def key(self) -> str:
        """The tensor's stable identity within its component (what a rename is keyed by)."""
        return self.role if self.index is None else f"{self.role}_{self.index}"

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape with every symbol as -1 (variable), as Triton and polygraphy write it."""
        return tuple(-1 if isinstance(d, str) else d for d in self.shape)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> symbol for every symbolic axis (the ONNX exporter's ``dynamic_axes``)."""
        return {i: d.replace("/", "_") for i, d in enumerate(self.shape) if isinstance(d, str)}

    # A per-sample scalar ([B]: timestep, conditioning_scale) has no dims of its own, but a
    # batched Triton model must declare at least one: its config declares [1] and reshapes to
    # [] (the graph sees [B]), and a BLS caller sends [B, 1]. The rule lives here, for both.
    @property
    def per_sample_scalar(self) -> bool:
        return len(self.shape) == 1

    @property
    def triton_dims(self) -> tuple[int, ...]:
        """Per-sample dims in a batched Triton config (the batch axis is Triton's own)."""
        return self.dims[1:] or (1,)

    @property
    def triton_reshape(self) -> tuple[int, ...] | None:
        """The shape the graph sees per sample, where it differs from :attr:`triton_dims`."""
        return () if self.per_sample_scalar else None

    def as_served(self, array):
        """``array`` as a BLS request to a batched Triton model sends it."""
        return array.reshape(-1, 1) if self.per_sample_scalar else array

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "TensorSpec":
        return cls(**{**values, "shape": tuple(values["shape"])})


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str = ""
    spatial: bool = True  # H/W may vary (False: only the batch axis is dynamic)
    tokens: int | None = None  # the value of the ``L`` symbol (caption tokens); None: no L axis
    latent_factor: int = LATENT_FACTOR  # image side / latent side: the ``h``/``w`` symbols are H/f, W/f

    def __post_init__(self):
        repeated = [n for n, count in Counter(t.name for t in self.inputs + self.outputs).items() if count > 1]
        if repeated:
            raise ValueError(f"component {self.name!r}: tensor names {repeated} are used twice")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, key: str) -> TensorSpec:
        return self._find(key, self.inputs, "input")

    def output(self, key: str) -> TensorSpec:
        return self._find(key, self.outputs, "output")

    def _find(self, key: str, tensors: tuple[TensorSpec, ...], kind: str) -> TensorSpec:
        for tensor in tensors:
            if tensor.key == key:
                return tensor
        raise KeyError(f"component {self.name!r} has no {kind} {key!r} (it has {[t.key for t in tensors]})")

    def bind(self, values: Mapping[str, object]) -> list[tuple[TensorSpec, object]]:
        """Pair every input with its value, by role (a list for a list-valued role), in spec order.
        A missing, unknown or miscounted value is a ``ValueError`` naming the component."""
        roles = Counter(t.role for t in self.inputs)
        missing, unknown = sorted(set(roles) - set(values)), sorted(set(values) - set(roles))
        if missing or unknown:
            raise ValueError(f"component {self.name!r}: inputs {missing} missing, {unknown} unknown "
                             f"(it takes {list(roles)})")
        for tensor in self.inputs:
            if tensor.index is not None and len(values[tensor.role]) != roles[tensor.role]:
                raise ValueError(f"component {self.name!r}: {tensor.role} takes {roles[tensor.role]} tensors, "
                                 f"got {len(values[tensor.role])}")
        return [(t, values[t.role] if t.index is None else values[t.role][t.index]) for t in self.inputs]

    def unbind(self, values: Sequence) -> dict[str, object]:
        """Output values in spec order -> role -> value (a list for a list-valued role)."""
        result: dict[str, object] = {}
        for tensor, value in zip(self.outputs, values, strict=True):
            if tensor.index is None:
                result[tensor.role] = value
            else:
                result.setdefault(tensor.role, []).append(value)
        return result

    def renamed(self, names: Mapping[str, str]) -> "ComponentSpec":
        """This spec with the tensors of keys ``names`` renamed (key -> new wire name)."""
        keys = {t.key for t in self.inputs + self.outputs}
        unknown = sorted(set(names) - keys)
        if unknown:
            raise ValueError(f"component {self.name!r}: no tensors {unknown} to rename (it has {sorted(keys)})")

        def rename(tensors):
            return tuple(replace(t, name=names.get(t.key, t.name)) for t in tensors)

        return replace(self, inputs=rename(self.inputs), outputs=rename(self.outputs))

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes for t in self.inputs + self.outputs if t.dynamic_axes}

    def shape_of(self, tensor: TensorSpec, batch: int, height: int, width: int) -> tuple[int, ...]:
        """Concrete shape of ``tensor`` for an image of ``height`` x ``width`` pixels."""
        return tuple(resolve_dim(d, batch, height, width, self.tokens, self.latent_factor) for d in tensor.shape)

    def profile(self, batch: tuple[int, int, int], image: tuple[int, int, int]) -> dict[str, tuple[tuple[int, ...], ...]]:
        """TensorRT optimisation profile: input name -> (min, opt, max) shapes over batch and square image
        sizes (a deployment profile's :class:`rfad.deploy.profiles.EngineShapes`)."""
        sizes = image if self.spatial else (image[1],) * 3
        return {t.name: tuple(self.shape_of(t, b, s, s) for b, s in zip(batch, sizes, strict=True)) for t in self.inputs}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "ComponentSpec":
        tensors = {kind: tuple(TensorSpec.from_dict(t) for t in values[kind]) for kind in ("inputs", "outputs")}
        return cls(**{**values, **tensors})


def resolve_dim(dim, batch: int, height: int, width: int, tokens: int | None = None,
                latent_factor: int = LATENT_FACTOR) -> int:
    """Value of one shape symbol."""
    if isinstance(dim, int):
        return dim
    base, _, divisor = dim.partition("/")
    value = {"B": batch, "H": height, "W": width, "h": height // latent_factor, "w": width // latent_factor,
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
    latent_factor: int = LATENT_FACTOR  # the VAE's downscale: 8 for SD-1.5, 4 for a 3-block VAE
    # ControlNet residuals: (channels, downscale vs the latent) per down residual; mid last.
    down_residuals: tuple[tuple[int, int], ...] = ()
    mid_residual: tuple[int, int] = (1280, 8)
    rfnet_width: int | None = None  # None: no judge components
    # Side of the square images depth, saliency and rfnet take (RFNet's image_size): fixed, so
    # their graphs see one shape per batch size whatever the ad's size (rfad.pipeline.judge_view).
    judge_size: int = 384
    caption_tokens: int = 64
    num_classes: int = len(CLASS_NAMES)  # RFNet's outputs
    screen_rfnet: bool = False  # a second RFNet for early screening (of the main one's width, size and classes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "ModelFacts":
        values = dict(values)
        values["down_residuals"] = tuple(tuple(r) for r in values.get("down_residuals", ()))
        values["mid_residual"] = tuple(values.get("mid_residual", (1280, 8)))
        return cls(**values)
