"""U2-Net: official checkpoint compatibility, strict loading, outputs and gradients."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from rfad.models.u2net import U2NET_PARAM_COUNT, U2Net, saliency_preprocess
from rfad.models.u2net_config import U2NetConfig
from rfad.tiny.zoo import build_tiny_u2net

# The public release, written out independently of rfad.models.u2net:
# (stage, RSU height, dilated RSU-F block, in, mid, out); side heads read (their input width).
OFFICIAL_STAGES = {
    "full": [
        ("stage1", 7, False, 3, 32, 64), ("stage2", 6, False, 64, 32, 128),
        ("stage3", 5, False, 128, 64, 256), ("stage4", 4, False, 256, 128, 512),
        ("stage5", 4, True, 512, 256, 512), ("stage6", 4, True, 512, 256, 512),
        ("stage5d", 4, True, 1024, 256, 512), ("stage4d", 4, False, 1024, 128, 256),
        ("stage3d", 5, False, 512, 64, 128), ("stage2d", 6, False, 256, 32, 64),
        ("stage1d", 7, False, 128, 16, 64),
    ],
    "small": [
        ("stage1", 7, False, 3, 16, 64), ("stage2", 6, False, 64, 16, 64),
        ("stage3", 5, False, 64, 16, 64), ("stage4", 4, False, 64, 16, 64),
        ("stage5", 4, True, 64, 16, 64), ("stage6", 4, True, 64, 16, 64),
        ("stage5d", 4, True, 128, 16, 64), ("stage4d", 4, False, 128, 16, 64),
        ("stage3d", 5, False, 128, 16, 64), ("stage2d", 6, False, 128, 16, 64),
        ("stage1d", 7, False, 128, 16, 64),
    ],
}
OFFICIAL_SIDES = {"full": (64, 64, 128, 256, 512, 512), "small": (64,) * 6}
# Parameter counts of U2NET / U2NETP as published by third-party model tables.
OFFICIAL_PARAM_COUNT = {"full": 44_009_869, "small": 1_131_181}


def official_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def rebnconv(prefix: str, cin: int, cout: int) -> None:
        shapes[f"{prefix}.conv_s1.weight"] = (cout, cin, 3, 3)
        shapes[f"{prefix}.conv_s1.bias"] = (cout,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn_s1.{name}"] = (cout,)
        shapes[f"{prefix}.bn_s1.num_batches_tracked"] = ()

    for stage, height, _, cin, mid, cout in OFFICIAL_STAGES[variant]:
        rebnconv(f"{stage}.rebnconvin", cin, cout)
        rebnconv(f"{stage}.rebnconv1", cout, mid)
        for level in range(2, height + 1):
            rebnconv(f"{stage}.rebnconv{level}", mid, mid)
        for level in range(height - 1, 1, -1):
            rebnconv(f"{stage}.rebnconv{level}d", 2 * mid, mid)
        rebnconv(f"{stage}.rebnconv1d", 2 * mid, cout)
    for index, width in enumerate(OFFICIAL_SIDES[variant], start=1):
        shapes[f"side{index}.weight"] = (1, width, 3, 3)
        shapes[f"side{index}.bias"] = (1,)
    shapes["outconv.weight"] = (1, 6, 1, 1)
    shapes["outconv.bias"] = (1,)
    return shapes


def official_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for u2net.pth / u2netp.pth: official names and shapes, random values."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(variant).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.05
    return state


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    return official_state_dict("small")


class Pickled:
    """Any class: its pickled instance must never be loaded."""

    def __init__(self) -> None:
        self.payload = 1


@pytest.mark.parametrize("variant", ["full", "small"])
def test_names_shapes_and_parameter_counts_match_official(variant: str) -> None:
    model = U2Net(U2NetConfig(variant=variant))
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert ours == official_shapes(variant)
    for key in ("stage1.rebnconvin.conv_s1.weight", "stage5d.rebnconv1d.bn_s1.running_mean",
                "stage1.rebnconv7.conv_s1.weight", "stage6.rebnconv4.bn_s1.weight",
                "side1.weight", "side6.bias", "outconv.weight"):
        assert key in ours
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == OFFICIAL_PARAM_COUNT[variant] == U2NET_PARAM_COUNT[variant]


@pytest.mark.parametrize("variant", ["full", "small"])
def test_official_checkpoint_files_load_with_inferred_variant(variant: str, tmp_path) -> None:
    state = official_state_dict(variant)
    torch.save(state, tmp_path / "u2net.pth")
    # Converted checkpoints often lack BatchNorm's step counter; it is optional.
    save_file({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
              str(tmp_path / "u2net.safetensors"))
    for name in ("u2net.pth", "u2net.safetensors"):
        model = U2Net.from_pretrained(tmp_path / name)
        assert model.config.variant == variant
        assert not model.training
        loaded = model.state_dict()
        for key in ("stage1.rebnconv1.conv_s1.weight", "stage4d.rebnconv3d.bn_s1.running_var",
                    "side3.weight", "outconv.bias"):
            assert torch.equal(loaded[key], state[key])


def corrupt(state: dict, kind: str) -> tuple[dict, str]:
    state = dict(state)
    if kind == "missing":
        del state["side3.bias"]
        return state, "side3.bias"
    if kind == "unexpected":
        state["extra.weight"] = torch.zeros(1)
        return state, "extra.weight"
    key = "stage3.rebnconv2.conv_s1.weight"
    state[key] = torch.zeros(16, 16, 1, 1)
    return state, key


@pytest.mark.parametrize("kind", ["missing", "unexpected", "wrong_shape"])
def test_mismatched_checkpoint_is_refused_naming_the_key(kind, small_state, tmp_path) -> None:
    state, key = corrupt(small_state, kind)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        U2Net.from_pretrained(path)


def test_missing_files_and_foreign_state_dicts_are_refused(small_state, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        U2Net.from_pretrained(tmp_path / "absent.pth")
    build_tiny_u2net().save_pretrained(tmp_path / "folder")
    (tmp_path / "folder" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        U2Net.from_pretrained(tmp_path / "folder")
    save_file({"conv.weight": torch.zeros(2, 3, 3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a U2-Net state dict"):
        U2Net.from_pretrained(tmp_path / "other.safetensors")
    torch.save({"module." + k: v for k, v in small_state.items()}, tmp_path / "dp.pth")
    with pytest.raises(ValueError, match="module\\."):
        U2Net.from_pretrained(tmp_path / "dp.pth")


def test_pickled_objects_are_refused(small_state, tmp_path) -> None:
    path = tmp_path / "u2netp.pth"
    torch.save({**small_state, "extra": Pickled()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        U2Net.from_pretrained(path)


@pytest.mark.parametrize("model_name", ["tiny", "small"])
@pytest.mark.parametrize("size", [(96, 64), (37, 23)])
def test_saliency_map_shape_and_range(model_name: str, size, small_state) -> None:
    model = build_tiny_u2net() if model_name == "tiny" else U2Net.from_state_dict(small_state)
    images = saliency_preprocess(torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        saliency = model(images)
        all_maps = tuple(torch.sigmoid(logits) for logits in model._logits(images))  # d0 and the six side maps
    assert saliency.shape == (2, 1, *size) and saliency.dtype == torch.float32
    assert 0.0 <= saliency.min() and saliency.max() <= 1.0
    assert len(all_maps) == 7 and all(m.shape == (2, 1, *size) for m in all_maps)
    assert torch.equal(all_maps[0], saliency)
    assert not torch.allclose(saliency[0], saliency[1])  # batch items are independent inputs


def test_save_pretrained_round_trip_and_seeds(tmp_path) -> None:
    model = build_tiny_u2net(seed=3)
    model.save_pretrained(tmp_path / "tiny")
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    assert config["variant"] == "custom" and U2NetConfig(**config) == model.config
    reloaded = U2Net.from_pretrained(tmp_path / "tiny")
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(images), reloaded(images))
    # A bare weights file of a custom model: the widths are inferred from the shapes.
    bare = U2Net.from_pretrained(tmp_path / "tiny" / "model.safetensors")
    assert bare.config == model.config

    same, other = build_tiny_u2net(seed=3).state_dict(), build_tiny_u2net(seed=4).state_dict()
    assert all(torch.equal(value, same[key]) for key, value in model.state_dict().items())
    assert not torch.equal(other["stage1.rebnconvin.conv_s1.weight"],
                           same["stage1.rebnconvin.conv_s1.weight"])


def test_gradients_reach_the_input_image() -> None:
    model = build_tiny_u2net()
    images01 = torch.rand(1, 3, 64, 64, requires_grad=True)
    model(saliency_preprocess(images01)).mean().backward()
    assert images01.grad is not None and images01.grad.abs().sum() > 0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="variant='custom'"):
        U2NetConfig(variant="full", encoder_out_channels=(8,) * 6)
    with pytest.raises(ValueError, match="decoder_mid_channels"):
        U2NetConfig(variant="custom", encoder_mid_channels=(4,) * 6,
                    encoder_out_channels=(8,) * 6, decoder_out_channels=(8,) * 5)
    with pytest.raises(ValueError, match="unknown U2-Net variant"):
        U2NetConfig(variant="large")
    assert U2NetConfig.from_dict(U2NetConfig("small").to_dict()) == U2NetConfig("small")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        build_tiny_u2net()(torch.zeros(1, 4, 32, 32))
