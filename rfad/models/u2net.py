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

The config (stages, preset widths) is :mod:`rfad.models.u2net_config`; reading a single
checkpoint file is :mod:`rfad.models.u2net_checkpoint`; the tiny test model is built by
:func:`rfad.tiny.zoo.build_tiny_u2net`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import Tensor, nn

from rfad.models.u2net_checkpoint import check_state_dict, infer_u2net_config, read_checkpoint
from rfad.models.u2net_config import DECODER_BLOCKS, ENCODER_BLOCKS, U2NetConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# The official test-time normalisation (ImageNet statistics).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Verified by instantiating U2Net(U2NetConfig(variant=...)) and counting nn.Parameters
# (buffers such as BatchNorm running statistics are not counted).
U2NET_PARAM_COUNT = {"full": 44_009_869, "small": 1_131_181}


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
        for index, (name, height, dilated) in enumerate(ENCODER_BLOCKS):
            self.add_module(name, ResidualUBlock(height, stage_in, enc_mid[index], enc_out[index],
                                                 dilated))
            stage_in = enc_out[index]
        for index in range(len(DECODER_BLOCKS) - 1, -1, -1):
            name, height, dilated = DECODER_BLOCKS[index]
            below = enc_out[index + 1] if index == len(DECODER_BLOCKS) - 1 else dec_out[index + 1]
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
        for index, (name, _, _) in enumerate(ENCODER_BLOCKS):
            if index > 0:
                hidden = _pool(hidden)
            hidden = getattr(self, name)(hidden)
            encoder_features.append(hidden)

        decoder_features: list[Tensor] = [None] * len(DECODER_BLOCKS)  # type: ignore[list-item]
        hidden = encoder_features[-1]
        for index in range(len(DECODER_BLOCKS) - 1, -1, -1):
            skip = encoder_features[index]
            hidden = _resize_like(hidden, skip)
            hidden = getattr(self, DECODER_BLOCKS[index][0])(torch.cat((hidden, skip), dim=1))
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
        check_state_dict(state_dict, expected, config, source, inferred)
        complete = dict(state_dict)
        for key, value in expected.items():
            if key not in complete:  # only optional keys can be absent after the check
                complete[key] = value
        model.load_state_dict(complete, strict=True)
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
