"""The architecture of a U2-Net (:class:`U2NetConfig`): its stages, and the channel widths of the
two public checkpoints (``u2net.pth`` -> variant "full", ``u2netp.pth`` -> variant "small").

Read by the network (:mod:`rfad.models.u2net`) and by the checkpoint reader that infers a
config from a state dict's shapes (:mod:`rfad.models.u2net_checkpoint`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from rfad.models.config_json import config_from_dict

# (stage, height of its RSU block, dilated) by stage number; RSU4F is the dilated, pooling-free block.
ENCODER_BLOCKS = (("stage1", 7, False), ("stage2", 6, False), ("stage3", 5, False),
                  ("stage4", 4, False), ("stage5", 4, True), ("stage6", 4, True))
DECODER_BLOCKS = (("stage1d", 7, False), ("stage2d", 6, False), ("stage3d", 5, False),
                  ("stage4d", 4, False), ("stage5d", 4, True))

# Channel widths of the two public checkpoints: encoder stage1..stage6, decoder stage1d..stage5d.
PRESET_WIDTHS: dict[str, dict[str, tuple[int, ...]]] = {
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
WIDTH_FIELDS = ("encoder_mid_channels", "encoder_out_channels",
                "decoder_mid_channels", "decoder_out_channels")


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
    # The side the saliency component resizes images to before the network: the official test
    # script's 320; a small model trained at another size declares it here.
    input_size: int = 320

    def __post_init__(self) -> None:
        if self.input_size < 32:
            raise ValueError(f"input_size must be at least 32, got {self.input_size}")
        if self.variant in PRESET_WIDTHS:
            preset = PRESET_WIDTHS[self.variant]
            for name in WIDTH_FIELDS:
                given = getattr(self, name)
                if given is not None and tuple(given) != preset[name]:
                    raise ValueError(
                        f"U2NetConfig(variant={self.variant!r}) has fixed widths: {name} must be "
                        f"{preset[name]} (got {tuple(given)}); use variant='custom' for other widths"
                    )
                setattr(self, name, preset[name])
        elif self.variant == "custom":
            missing = [name for name in WIDTH_FIELDS if getattr(self, name) is None]
            if missing:
                raise ValueError(f"U2NetConfig(variant='custom') needs {', '.join(missing)}")
            for name in WIDTH_FIELDS:
                setattr(self, name, tuple(int(width) for width in getattr(self, name)))
        else:
            raise ValueError(
                f"unknown U2-Net variant {self.variant!r}; expected 'full', 'small' or 'custom'"
            )
        for name, count in zip(WIDTH_FIELDS, (6, 6, 5, 5)):
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
        return config_from_dict(cls, values, "U2-Net config")
