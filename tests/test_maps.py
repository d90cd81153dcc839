"""The depth and saliency components: [0,1] images in, [0,1] one-channel maps out, differentiable."""

from __future__ import annotations

import pytest
import torch

from rfad.models.folders import ModelFolderError
from rfad.models.maps import DepthEstimator, SaliencyEstimator
from rfad.tiny.zoo import build_tiny_u2net


@pytest.fixture(scope="module")
def estimators(tiny_zoo, tmp_path_factory):
    u2net_dir = tmp_path_factory.mktemp("u2net")
    build_tiny_u2net(seed=0).save_pretrained(u2net_dir)
    return DepthEstimator.from_pretrained(tiny_zoo / "dpt"), SaliencyEstimator.from_pretrained(u2net_dir)


def test_maps_have_the_input_size_and_unit_range(estimators):
    images = torch.rand(2, 3, 80, 112)
    for estimator in estimators:
        with torch.no_grad():
            maps = estimator(images)
        assert maps.shape == (2, 1, 80, 112) and maps.dtype == torch.float32
        assert maps.min() >= 0 and maps.max() <= 1
        assert torch.allclose(maps.amax(dim=(1, 2, 3)), torch.ones(2))  # normalised per image
        assert not torch.equal(maps[0], maps[1])  # depends on the image


def test_depth_uses_the_processor_size(tiny_zoo, estimators):
    depth, _ = estimators
    assert depth.size == 64  # the zoo's preprocessor_config.json, not the 384 default


def test_gradients_reach_the_image_through_both(estimators):
    for estimator in estimators:
        images = torch.rand(1, 3, 64, 64, requires_grad=True)
        (estimator(images) * torch.linspace(0, 1, 64)).sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0


def test_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelFolderError, match="DPT"):
        DepthEstimator.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelFolderError, match="U2-Net"):
        SaliencyEstimator.from_pretrained(tmp_path / "nope")


@pytest.mark.parametrize("height, width, size", [(16, 4096, 64), (1200, 900, 384), (37, 53, 64), (64, 64, 64)])
def test_the_judge_view_resizes_alike_in_numpy_and_torch(height, width, size):
    """The rfad_judge endpoint (numpy, no torch) and every runner's judge (torch) see the same pixels."""
    import numpy as np
    import torch.nn.functional as F

    from rfad.pipeline.judge_view import resize_array, resize_tensor

    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height + width))
    expected = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    got = resize_array(images.numpy(), size)
    assert got.shape == (2, 3, size, size) and got.dtype == np.float32
    assert np.abs(got - expected.numpy()).max() < 1e-6
    assert torch.equal(resize_tensor(images, size), expected)
    grown = images[:, :, :8, :8].clone().requires_grad_(True)  # and it passes gradients on (RFFT)
    resize_tensor(grown, size).sum().backward()
    assert grown.grad.abs().sum() > 0
