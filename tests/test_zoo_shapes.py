"""Zoo shapes: the sd15 twin's published sizes (counted on the meta device, no gigabytes), the
seeded cheap init the big shapes use, and the parameter report every zoo writes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rfad.tiny import zoo
from rfad.tiny.shapes import SD15_SHAPE, tiny_shape


def test_sd15_shape_has_the_published_parameter_counts():
    counts = zoo.shape_parameter_counts(SD15_SHAPE)
    report = zoo.check_parameter_counts(counts, SD15_SHAPE)
    # Exact counts of the published checkpoints (diffusers/transformers configs of the real weights).
    assert counts["unet"] == 859_520_964 and counts["vae"] == 83_653_863 and counts["text_encoder"] == 123_060_480
    assert counts["saliency"] == 44_009_869 and counts["resnet"] == 23_508_032
    assert abs(counts["controlnet"] - 361e6) < 0.5e6 and abs(counts["depth"] - 343e6) < 0.5e6
    assert set(report) == set(counts) and "unet_inpaint" not in counts  # the twin writes no inpaint UNet
    assert 8e9 < 4 * sum(counts.values()) < 9e9  # what `rfad tiny --shape sd15` says it writes


def test_a_shape_off_its_published_counts_is_refused():
    narrower = dataclasses.replace(SD15_SHAPE, unet={**SD15_SHAPE.unet, "block_out_channels": (320, 640, 1280, 1024)})
    with pytest.raises(zoo.ParameterCountError, match="unet has .* parameters, published 859,520,964"):
        zoo.check_parameter_counts(zoo.shape_parameter_counts(narrower), narrower)


def test_fast_init_is_seeded_and_tame():
    """The big shapes' init: same seed same weights, norms 1 and biases 0, activations of unit scale."""
    fast = dataclasses.replace(tiny_shape(), fast_init=True)
    a, b, c = zoo.tiny_unet(4, 3, fast), zoo.tiny_unet(4, 3, fast), zoo.tiny_unet(4, 4, fast)
    flat = [torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c)]
    assert torch.equal(flat[0], flat[1]) and not torch.equal(flat[0], flat[2])
    norm = a.conv_norm_out
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    with torch.no_grad():
        out = a(torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 32)).sample
    assert torch.isfinite(out).all() and 0.05 < float(out.std()) < 20
    controlnet = zoo.tiny_controlnet(a, 3, fast)
    assert all(float(conv.weight.detach().abs().max()) > 0 for conv in controlnet.controlnet_down_blocks)
    # Layers copied from the UNet get values of their own, as a trained ControlNet has.
    assert not torch.equal(controlnet.conv_in.weight, a.conv_in.weight)


def test_zoo_writes_its_parameter_report(tiny_zoo):
    report = json.loads((tiny_zoo / "parameters.json").read_text())
    assert report["shape"] == "tiny"
    assert report["models"]["unet"]["parameters"] == sum(p.numel() for p in zoo.tiny_unet(4, 0).parameters())
    assert set(report["models"]) >= {"text_encoder", "vae", "unet", "unet_inpaint", "controlnet", "depth", "rfnet"}
