"""U2-Net saliency detector (Qin et al. 2020, "U2-Net: Going Deeper with Nested U-Structure for
Salient Object Detection"), written for rfad.

RFNet reads a saliency map of the generated image, and RFFT back-propagates through it, so the
network lives here as a plain differentiable module. Its module and parameter names follow the
public release exactly, so the official checkpoints load unchanged:

- ``u2net.pth``  (class ``U2NET``,  44.0M parameters)  -> ``U2NetConfig(variant="full")``
- ``u2netp.pth`` (class ``U2NETP``, 1.13M parameters)  -> ``U2NetConfig(variant="small")``

Layout (names as in the state dict): encoder stages ``stage1..stage6`` (RSU7, RSU6, RSU5, RSU4,
RSU4F, RSU4F), decoder stages ``stage5d..stage1d`` (RSU4F, RSU4, RSU5, RSU6, RSU7), side heads
``side1..side6`` (3x3 conv to ``out_channels``) and ``outconv`` (1x1 conv fusing the six side
maps). Every RSU block holds ``rebnconvin``, ``rebnconv1..rebnconvL`` and
``rebnconv{L-1}d..rebnconv1d``; each of those is a conv (``conv_s1``) + batch norm (``bn_s1``) + ReLU.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import Tensor, nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# The official test-time normalisation (ImageNet statistics).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Height of the RSU block in each stage; RSU4F is the dilated, pooling-free block.
_ENCODER_BLOCKS = (("stage1", 7, False), ("stage2", 6, False), ("stage3", 5, False),
                   ("stage4", 4, False), ("stage5", 4, True), ("stage6", 4, True))
_DECODER_BLOCKS = (("stage1d", 7, False), ("stage2d", 6, False), ("stage3d", 5, False),
                   ("stage4d", 4, False), ("stage5d", 4, True))

# Channel widths of the two public checkpoints: encoder stage1..stage6, decoder stage1d..stage5d.
_PRESET_WIDTHS: dict[str, dict[str, tuple[int, ...]]] = {
    "full": {
        "encoder_mid_channels": (32, 32, 64, 128, 256, 256),
        "encoder_out_channels": (64, 128, 256, 512, 512, 512),
        "decoder_mid_channels": (16, 32, 64, 128, 256),
        "decoder_out_channels": (64, 64, 128, 256, 512),
    },
    "small": {
        "encoder_mid_channels": (16,) * 6,
        "encoder_out_channels": (64,) * 6,
        "decoder_mid_channels": (16,) * 5,
        "decoder_out_channels": (64,) * 5,
    },
}
_WIDTH_FIELDS = ("encoder_mid_channels", "encoder_out_channels",
                 "decoder_mid_channels", "decoder_out_channels")

# Verified by instantiating U2Net(U2NetConfig(variant=...)) and counting nn.Parameters
# (buffers such as BatchNorm running statistics are not counted).
U2NET_PARAM_COUNT = {"full": 44_009_869, "small": 1_131_181}

# Widths of the tiny test model: same names as the official model, a few channels each, and
# deliberately non-uniform so that every width is plumbed through correctly.
TINY_U2NET_WIDTHS = {
    "encoder_mid_channels": (4, 4, 8, 8, 8, 8),
    "encoder_out_channels": (8, 8, 16, 16, 16, 16),
    "decoder_mid_channels": (4, 4, 4, 8, 8),
    "decoder_out_channels": (8, 8, 8, 16, 16),
}

# BatchNorm's step counter is not stored by every exporter of the official weights, and it does
# not affect inference, so its absence is tolerated (PyTorch itself does the same).
_OPTIONAL_KEY_SUFFIX = "num_batches_tracked"
_MAX_KEYS_IN_ERROR = 5


@dataclass
class U2NetConfig:
    """Architecture of a U2-Net.

    ``variant`` "full" and "small" fix the widths to those of ``u2net.pth`` and ``u2netp.pth``;
    "custom" takes all four width tuples (used by the tiny test model). Width tuples are ordered
    by stage number: encoder ``stage1..stage6`` (6 entries), decoder ``stage1d..stage5d`` (5 entries).
    The input width of every stage follows from these (encoder: the previous stage's output;
    decoder: the stage below plus the skip connection), exactly as in the official network.
    """

    variant: str = "full"
    in_channels: int = 3
    out_channels: int = 1
    encoder_mid_channels: tuple[int, ...] | None = None
    encoder_out_channels: tuple[int, ...] | None = None
    decoder_mid_channels: tuple[int, ...] | None = None
    decoder_out_channels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.variant in _PRESET_WIDTHS:
            preset = _PRESET_WIDTHS[self.variant]
            for name in _WIDTH_FIELDS:
                given = getattr(self, name)
                if given is not None and tuple(given) != preset[name]:
                    raise ValueError(
                        f"U2NetConfig(variant={self.variant!r}) has fixed widths: {name} must be "
                        f"{preset[name]} (got {tuple(given)}); use variant='custom' for other widths"
                    )
                setattr(self, name, preset[name])
        elif self.variant == "custom":
            missing = [name for name in _WIDTH_FIELDS if getattr(self, name) is None]
            if missing:
                raise ValueError(f"U2NetConfig(variant='custom') needs {', '.join(missing)}")
            for name in _WIDTH_FIELDS:
                setattr(self, name, tuple(int(width) for width in getattr(self, name)))
        else:
            raise ValueError(
                f"unknown U2-Net variant {self.variant!r}; expected 'full', 'small' or 'custom'"
            )
        for name, count in zip(_WIDTH_FIELDS, (6, 6, 5, 5)):
            widths = getattr(self, name)
            if len(widths) != count or any(width <= 0 for width in widths):
                raise ValueError(f"{name} must hold {count} positive widths, got {widths}")
        if self.in_channels <= 0 or self.out_channels <= 0:
            raise ValueError(
                f"in_channels and out_channels must be positive, got {self.in_channels}, "
                f"{self.out_channels}"
            )

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping) -> "U2NetConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown U2NetConfig fields: {unknown}")
        return cls(**values)


class ConvBatchNormReLU(nn.Module):
    """3x3 (dilated) conv + batch norm + ReLU; the official ``REBNCONV`` (names ``conv_s1``, ``bn_s1``)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


def _pool(x: Tensor) -> Tensor:
    # ceil_mode keeps odd sizes: a 5-pixel map pools to 3, and the decoder resizes back to 5.
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


def _resize_like(x: Tensor, reference: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``reference`` (official ``_upsample_like``)."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class ResidualUBlock(nn.Module):
    """Residual U-block RSU-L (``height`` L) or, with ``dilated``, RSU-LF.

    RSU-L: encoder convs 1..L-1 at dilation 1 with a 2x max-pool after each but the last, a
    bottom conv L at dilation 2, decoder convs (L-1)d..1d on [upsampled, skip] concatenations.
    RSU-LF keeps the resolution and grows the dilation instead (1, 2, 4, ... at the bottom).
    The block output is ``decoder output + rebnconvin(x)``.
    Input [B, in_channels, H, W] -> output [B, out_channels, H, W].
    """

    def __init__(self, height: int, in_channels: int, mid_channels: int, out_channels: int,
                 dilated: bool = False) -> None:
        super().__init__()
        self.height = height
        self.dilated = dilated
        encoder_dilations = [2 ** i if dilated else 1 for i in range(height - 1)]
        bottom_dilation = 2 ** (height - 1) if dilated else 2

        self.rebnconvin = ConvBatchNormReLU(in_channels, out_channels)
        for level, dilation in enumerate(encoder_dilations, start=1):
            level_in = out_channels if level == 1 else mid_channels
            self.add_module(f"rebnconv{level}", ConvBatchNormReLU(level_in, mid_channels, dilation))
        self.add_module(f"rebnconv{height}",
                        ConvBatchNormReLU(mid_channels, mid_channels, bottom_dilation))
        for level in range(height - 1, 0, -1):
            level_out = out_channels if level == 1 else mid_channels
            self.add_module(f"rebnconv{level}d", ConvBatchNormReLU(
                2 * mid_channels, level_out, encoder_dilations[level - 1]))

    def forward(self, x: Tensor) -> Tensor:
        residual = self.rebnconvin(x)
        skips = []
        hidden = residual
        for level in range(1, self.height):
            hidden = getattr(self, f"rebnconv{level}")(hidden)
            skips.append(hidden)
            if not self.dilated and level < self.height - 1:
                hidden = _pool(hidden)
        hidden = getattr(self, f"rebnconv{self.height}")(hidden)
        for level in range(self.height - 1, 0, -1):
            skip = skips[level - 1]
            # Resize exactly where the encoder pooled (decided by structure, not by the current
            # shapes, so that a traced ONNX graph stays correct for every input size).
            if not self.dilated and level < self.height - 1:
                hidden = _resize_like(hidden, skip)
            hidden = getattr(self, f"rebnconv{level}d")(torch.cat((hidden, skip), dim=1))
        return hidden + residual


class U2Net(nn.Module):
    """U2-Net salient object detector, state-dict compatible with the official checkpoints."""

    def __init__(self, config: U2NetConfig) -> None:
        super().__init__()
        self.config = config
        enc_mid, enc_out = config.encoder_mid_channels, config.encoder_out_channels
        dec_mid, dec_out = config.decoder_mid_channels, config.decoder_out_channels

        # Registration order follows the official class, so state_dict() lists keys in its order.
        stage_in = config.in_channels
        for index, (name, height, dilated) in enumerate(_ENCODER_BLOCKS):
            self.add_module(name, ResidualUBlock(height, stage_in, enc_mid[index], enc_out[index],
                                                 dilated))
            stage_in = enc_out[index]
        for index in range(len(_DECODER_BLOCKS) - 1, -1, -1):
            name, height, dilated = _DECODER_BLOCKS[index]
            below = enc_out[index + 1] if index == len(_DECODER_BLOCKS) - 1 else dec_out[index + 1]
            self.add_module(name, ResidualUBlock(height, below + enc_out[index], dec_mid[index],
                                                 dec_out[index], dilated))
        side_in = list(dec_out) + [enc_out[-1]]
        for index, width in enumerate(side_in, start=1):
            self.add_module(f"side{index}", nn.Conv2d(width, config.out_channels, 3, padding=1))
        self.outconv = nn.Conv2d(6 * config.out_channels, config.out_channels, 1)

    def _logits(self, images: Tensor) -> tuple[Tensor, ...]:
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"U2Net expects images [B, {self.config.in_channels}, H, W], got {tuple(images.shape)}"
            )
        encoder_features = []
        hidden = images
        for index, (name, _, _) in enumerate(_ENCODER_BLOCKS):
            if index > 0:
                hidden = _pool(hidden)
            hidden = getattr(self, name)(hidden)
            encoder_features.append(hidden)

        decoder_features: list[Tensor] = [None] * len(_DECODER_BLOCKS)  # type: ignore[list-item]
        hidden = encoder_features[-1]
        for index in range(len(_DECODER_BLOCKS) - 1, -1, -1):
            skip = encoder_features[index]
            hidden = _resize_like(hidden, skip)
            hidden = getattr(self, _DECODER_BLOCKS[index][0])(torch.cat((hidden, skip), dim=1))
            decoder_features[index] = hidden

        side_features = decoder_features + [encoder_features[-1]]
        full_size = side_features[0]
        sides = []
        for index, feature in enumerate(side_features, start=1):
            side = getattr(self, f"side{index}")(feature)
            sides.append(side if index == 1 else _resize_like(side, full_size))
        fused = self.outconv(torch.cat(sides, dim=1))
        return (fused, *sides)

    def forward(self, images: Tensor) -> Tensor:
        """images: float [B, in_channels, H, W], ImageNet-normalised RGB (see
        :func:`saliency_preprocess`); any H, W (multiples of 32 avoid resampling inside the network).
        Returns the fused saliency map d0 after sigmoid: float [B, out_channels, H, W] in [0, 1]."""
        return torch.sigmoid(self._logits(images)[0])

    def forward_all(self, images: Tensor) -> tuple[Tensor, ...]:
        """Like :meth:`forward`, but returns (d0, d1, ..., d6) after sigmoid, each
        [B, out_channels, H, W]: the fused map and the six side outputs (deep supervision)."""
        return tuple(torch.sigmoid(logits) for logits in self._logits(images))

    def save_pretrained(self, directory: str | Path) -> None:
        """Writes ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {key: value.detach().contiguous().cpu() for key, value in self.state_dict().items()}
        save_safetensors(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "U2Net":
        """Loads a folder written by :meth:`save_pretrained`, or a single checkpoint file: an
        official ``.pth`` (read with ``torch.load(weights_only=True)``; pickled objects other than
        tensors are refused) or a ``.safetensors`` state dict. For a single file the variant is
        inferred from the parameter shapes. Returns the model in eval mode.

        Raises FileNotFoundError for a missing path, ValueError for a file that is not a U2-Net
        state dict (missing, unexpected or wrongly shaped keys are listed)."""
        path = Path(path)
        if path.is_dir():
            config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
            for required in (config_path, weights_path):
                if not required.is_file():
                    raise FileNotFoundError(f"U2-Net folder {path} has no {required.name}")
            config = U2NetConfig.from_dict(json.loads(config_path.read_text()))
            state_dict = load_safetensors(str(weights_path))
            return cls.from_state_dict(state_dict, config, source=str(weights_path))
        if not path.is_file():
            raise FileNotFoundError(f"U2-Net checkpoint not found: {path}")
        return cls.from_state_dict(read_checkpoint(path), source=str(path))

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], config: U2NetConfig | None = None,
                        source: str = "state dict") -> "U2Net":
        """Builds a U2-Net from a state dict with the official names; ``config`` is inferred from
        the shapes when not given. Every key must match in name and shape (no partial loads)."""
        inferred = config is None
        if config is None:
            config = infer_u2net_config(state_dict, source)
        model = cls(config)
        expected = model.state_dict()
        _check_state_dict(state_dict, expected, config, source, inferred)
        complete = dict(state_dict)
        for key, value in expected.items():
            if key not in complete:  # only optional keys can be absent after the check
                complete[key] = value
        model.load_state_dict(complete, strict=True)
        return model.eval()


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Reads a state dict from ``.safetensors`` or a PyTorch pickle (``.pth``/``.pt``/``.ckpt``),
    the latter with ``weights_only=True`` so that no arbitrary object is ever unpickled."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_safetensors(str(path))
    elif path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            # torch's own message is a page long and suggests weights_only=False; keep the reason.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = next((line for line in lines if "Unsupported global" in line),
                          lines[0] if lines else type(error).__name__)
            raise ValueError(
                f"refused to load {path}: torch.load(weights_only=True) failed, the file holds "
                f"pickled objects other than tensors or is not a PyTorch checkpoint ({reason})"
            ) from error
    else:
        raise ValueError(
            f"unsupported U2-Net checkpoint {path}: expected a .pth/.pt/.ckpt/.bin or .safetensors "
            f"file, or a folder written by U2Net.save_pretrained"
        )
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path} is not a flat state dict; non-tensor entries: {not_tensors[:_MAX_KEYS_IN_ERROR]}"
        )
    return dict(state)


def infer_u2net_config(state_dict: Mapping[str, Tensor], source: str = "state dict") -> U2NetConfig:
    """Reads the widths from the conv weights of every stage: ``stageN.rebnconvin`` gives the
    stage's output width, ``stageN.rebnconv1`` its middle width (this is the key that tells the
    public checkpoints apart: stage1 middle width 32 in ``u2net.pth``, 16 in ``u2netp.pth``), and
    ``stage1.rebnconvin`` / ``side1`` the input / output channels. Returns variant "full" or
    "small" when the widths are those of a public checkpoint, else "custom"."""

    def shape_of(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            hint = ""
            if any(name.startswith("module.") for name in state_dict):
                hint = " (keys start with 'module.': strip the DataParallel prefix first)"
            raise ValueError(
                f"{source} is not a U2-Net state dict: cannot infer its widths, missing key "
                f"{key!r}{hint}; first keys: {list(state_dict)[:_MAX_KEYS_IN_ERROR]}"
            )
        shape = tuple(state_dict[key].shape)
        if len(shape) != 4:
            raise ValueError(f"{source}: {key!r} should be a 4-d conv weight, has shape {shape}")
        return shape

    widths: dict[str, list[int]] = {name: [] for name in _WIDTH_FIELDS}
    for prefix, blocks in (("encoder", _ENCODER_BLOCKS), ("decoder", _DECODER_BLOCKS)):
        for stage, _, _ in blocks:
            widths[f"{prefix}_out_channels"].append(shape_of(f"{stage}.rebnconvin.conv_s1.weight")[0])
            widths[f"{prefix}_mid_channels"].append(shape_of(f"{stage}.rebnconv1.conv_s1.weight")[0])
    found = {name: tuple(values) for name, values in widths.items()}
    in_channels = shape_of("stage1.rebnconvin.conv_s1.weight")[1]
    out_channels = shape_of("side1.weight")[0]
    variant = next((name for name, preset in _PRESET_WIDTHS.items() if preset == found), "custom")
    if variant != "custom":
        return U2NetConfig(variant=variant, in_channels=in_channels, out_channels=out_channels)
    return U2NetConfig(variant="custom", in_channels=in_channels, out_channels=out_channels, **found)


def _check_state_dict(state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                      config: U2NetConfig, source: str, inferred: bool) -> None:
    missing = [key for key in expected
               if key not in state_dict and not key.endswith(_OPTIONAL_KEY_SUFFIX)]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        f"{key}: {tuple(state_dict[key].shape)} != expected {tuple(expected[key].shape)}"
        for key in state_dict
        if key in expected and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("wrong shapes", wrong_shape)):
        if keys:
            more = f" (+{len(keys) - _MAX_KEYS_IN_ERROR} more)" if len(keys) > _MAX_KEYS_IN_ERROR else ""
            problems.append(f"{len(keys)} {label}: {keys[:_MAX_KEYS_IN_ERROR]}{more}")
    if problems:
        how = " (inferred from its parameter shapes)" if inferred else ""
        raise ValueError(
            f"{source} does not match U2-Net variant {config.variant!r}{how}: " + "; ".join(problems)
        )


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


def saliency_preprocess(images01: Tensor, rescale_by_max: bool = True) -> Tensor:
    """[B, 3, H, W] float RGB in [0, 1] -> the U2-Net input [B, 3, H, W] (differentiable).

    Matches the official test-time transform (``ToTensorLab``): each image is first divided by
    its own maximum (``rescale_by_max``), then normalised with the ImageNet mean and std. The
    official pipeline also resizes to 320x320 beforehand; resizing is left to the caller."""
    if images01.ndim != 4 or images01.shape[1] != 3:
        raise ValueError(f"saliency_preprocess expects [B, 3, H, W], got {tuple(images01.shape)}")
    if rescale_by_max:
        peak = images01.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        images01 = images01 / peak
    mean = images01.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images01.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images01 - mean) / std
