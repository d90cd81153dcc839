"""Reading U2-Net weights from a single file: the official ``u2net.pth`` / ``u2netp.pth`` (PyTorch
pickles, read with ``torch.load(weights_only=True)`` so no object other than tensors is ever
unpickled) or a ``.safetensors`` state dict. The config is inferred from the parameter shapes,
and a state dict must match the network key for key and shape for shape (no partial loads).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from rfad.models.u2net_config import DECODER_BLOCKS, ENCODER_BLOCKS, PRESET_WIDTHS, WIDTH_FIELDS, U2NetConfig

# BatchNorm's step counter is not stored by every exporter of the official weights, and it does
# not affect inference, so its absence is tolerated (PyTorch itself does the same).
_OPTIONAL_KEY_SUFFIX = "num_batches_tracked"
_MAX_KEYS_IN_ERROR = 5


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

    widths: dict[str, list[int]] = {name: [] for name in WIDTH_FIELDS}
    for prefix, blocks in (("encoder", ENCODER_BLOCKS), ("decoder", DECODER_BLOCKS)):
        for stage, _, _ in blocks:
            widths[f"{prefix}_out_channels"].append(shape_of(f"{stage}.rebnconvin.conv_s1.weight")[0])
            widths[f"{prefix}_mid_channels"].append(shape_of(f"{stage}.rebnconv1.conv_s1.weight")[0])
    found = {name: tuple(values) for name, values in widths.items()}
    in_channels = shape_of("stage1.rebnconvin.conv_s1.weight")[1]
    out_channels = shape_of("side1.weight")[0]
    variant = next((name for name, preset in PRESET_WIDTHS.items() if preset == found), "custom")
    if variant != "custom":
        return U2NetConfig(variant=variant, in_channels=in_channels, out_channels=out_channels)
    return U2NetConfig(variant="custom", in_channels=in_channels, out_channels=out_channels, **found)


def check_state_dict(state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                     config: U2NetConfig, source: str, inferred: bool) -> None:
    """Raises ValueError unless ``state_dict`` has every key of ``expected`` (the built network's
    state dict; BatchNorm step counters may be absent) in its shape and no other key. The message
    lists the first few keys of each kind, names ``config``'s variant and whether it was
    ``inferred`` from the shapes."""
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
