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
