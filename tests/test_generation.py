"""The generation loop on the tiny zoo: parity with diffusers, determinism, Recurrent Generation logic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rfad.canvas import CanvasSpec, paste_back, prepare_canvas
from rfad.contract import InvalidRequest
from rfad.models.diffusion import load_diffusion_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.denoise import GenerationCancelled, denoise, to_uint8
from rfad.pipeline.generate import generate
from rfad.pipeline.request import prepare_request
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner

from rfad.tiny.products import draw_product

SIZE = 128  # latent 16x16: fast on 2 cores, still exercises every block of the tiny models


@pytest.fixture(scope="module")
def canvas():
    return prepare_canvas(draw_product("bottle", 60, 100), CanvasSpec(width=SIZE, height=SIZE, mask_dilation=6))


def _runner(zoo, sd="sd15"):
    model_set = ModelSet.resolve(zoo).with_overrides(sd=zoo / sd)
    return TorchRunner(load_diffusion_models(model_set))


def _diffusers_image(runner: TorchRunner, canvas, prompt, seed, steps, guidance, scale, latents):
    from diffusers import DDIMScheduler, StableDiffusionControlNetInpaintPipeline

    m = runner.models
    pipe = StableDiffusionControlNetInpaintPipeline(
        vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet, controlnet=m.controlnet,
        scheduler=DDIMScheduler.from_config(m.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        prompt=prompt, image=Image.fromarray(canvas.init_image), mask_image=Image.fromarray(canvas.mask),
        control_image=Image.fromarray(canvas.control_image), height=SIZE, width=SIZE, num_inference_steps=steps,
        guidance_scale=guidance, controlnet_conditioning_scale=scale, eta=0.0,
        generator=torch.Generator("cpu").manual_seed(seed), latents=latents, output_type="np",
    )
    return (out.images * 255).round().astype(np.uint8)


@pytest.mark.parametrize("sd", ["sd15", "sd15-inpaint"])
@pytest.mark.parametrize("given_latents", [True, False])
def test_torch_runner_matches_diffusers_pipeline(tiny_zoo, canvas, sd, given_latents):
    """Same weights, seed (and latents) -> the image of diffusers' ControlNet inpaint pipeline, within 2/255."""
    runner = _runner(tiny_zoo, sd)
    settings = GenerationSettings(steps=5, guidance_scale=7.5, controlnet_scale=0.8, seed=11)
    latents = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(3)) if given_latents else None
    prepared = prepare_request(runner, canvas, "a bottle on a marble table")
    ours = to_uint8(denoise(runner, prepared, [11], settings, latents=latents))
    theirs = _diffusers_image(runner, canvas, "a bottle on a marble table", 11, 5, 7.5, 0.8, latents)
    assert ours.shape == theirs.shape == (1, SIZE, SIZE, 3)
    diff = np.abs(ours.astype(int) - theirs.astype(int)).max()
    assert diff <= 2, f"max difference {diff}/255"
    # The check is not vacuous: the ControlNet and the prompt both change the image.
    other = to_uint8(denoise(runner, prepared, [12], settings))
    assert np.abs(other.astype(int) - ours.astype(int)).max() > 10


def test_batched_candidates_equal_single_runs(tiny_zoo, canvas):
    """K candidates of one attempt run as one batch and each equals its own single-seed run."""
    runner = _runner(tiny_zoo)
    settings = GenerationSettings(steps=3, seed=0)
    prepared = prepare_request(runner, canvas, "a bottle")
    batch = to_uint8(denoise(runner, prepared, [5, 6, 7], settings))
    for k, seed in enumerate([5, 6, 7]):
        single = to_uint8(denoise(runner, prepared, [seed], settings))
        assert np.abs(batch[k].astype(int) - single[0].astype(int)).max() <= 1


def test_generate_is_deterministic_and_keeps_product_pixels(tiny_zoo, canvas):
    runner = _runner(tiny_zoo)
    settings = GenerationSettings(steps=3, seed=7, num_images=2, candidates=2)
    first = generate(runner, canvas, "a bottle on a marble table", settings)
    again = generate(runner, canvas, "a bottle on a marble table", settings)
    other = generate(runner, canvas, "a bottle on a marble table", GenerationSettings(steps=3, seed=8))
    assert [c.seed for c in first.images] == [7, 8]
    assert np.array_equal(first.images[0].image, again.images[0].image)
    assert not np.array_equal(first.images[0].image, first.images[1].image)
    # Candidate i uses seed + i: the same image as a single run of that seed, up to the float
    # rounding of a batched convolution (as in test_batched_candidates_equal_single_runs).
    assert np.abs(first.images[1].image.astype(int) - other.images[0].image.astype(int)).max() <= 1
    opaque = canvas.product_alpha == 255
    for candidate in first.images:
        assert candidate.image.shape == (SIZE, SIZE, 3) and candidate.image.dtype == np.uint8
        assert np.array_equal(candidate.image[opaque], canvas.product_rgb[opaque])
        assert candidate.available is None and candidate.probabilities is None


class BrightnessJudge:
    """A deterministic stand-in for RFNet so the loop's control flow can be asserted exactly:
    p(Available) is the mean brightness of the background region."""

    def __init__(self):
        self.prepared = 0

    def prepare(self, canvas, caption):
        self.prepared += 1
        return canvas.mask > 0

    def __call__(self, images, background):
        p = images[:, background].mean(axis=(1, 2)) / 255.0
        return np.stack([p] + [(1 - p) / 4] * 4, axis=1)


def test_recurrent_generation_stops_at_first_available_and_respects_max_attempts(tiny_zoo, canvas):
    runner = _runner(tiny_zoo)
    judge = BrightnessJudge()
    # threshold 1.0: nothing passes, so every attempt is used and no more; the judge prepares once.
    unreachable = generate(runner, canvas, "ad", GenerationSettings(steps=2, seed=0, max_attempts=4, threshold=1.0),
                           judge=judge, caption="red bottle")
    assert unreachable.attempts == 4 and len(unreachable.candidates) == 4 and judge.prepared == 1
    p = [c.p_available for c in unreachable.candidates]
    assert len(set(p)) == 4  # seeds differ, so do the images
    # None passed: the best candidate comes back, flagged not available.
    assert unreachable.images[0].available is False and unreachable.images[0].p_available == max(p)
    # Threshold at the best candidate's p: the loop stops exactly at that attempt.
    best = int(np.argmax(p))
    stopped = generate(runner, canvas, "ad", GenerationSettings(steps=2, seed=0, max_attempts=4, threshold=p[best]),
                       judge=judge)
    assert stopped.attempts == best + 1
    assert stopped.images[0].available is True and stopped.images[0].seed == best
    # K candidates per attempt: two wanted, batches of two; stops once two are kept.
    two = generate(runner, canvas, "ad", GenerationSettings(steps=2, seed=0, num_images=2, candidates=2,
                                                            max_attempts=4, threshold=0.0), judge=judge)
    assert two.attempts == 1 and [c.seed for c in two.images] == [0, 1]


def test_cancellation_between_steps(tiny_zoo, canvas):
    runner = _runner(tiny_zoo)
    steps_seen = []
    with pytest.raises(GenerationCancelled):
        generate(runner, canvas, "ad", GenerationSettings(steps=6), on_step=lambda d, t: steps_seen.append(d),
                 should_stop=lambda: len(steps_seen) >= 2)
    assert steps_seen == [1, 2]


@pytest.mark.parametrize("field, value", [("steps", 0), ("steps", 1000), ("guidance_scale", float("nan")),
                                          ("candidates", 99), ("seed", -1), ("threshold", 1.5)])
def test_settings_out_of_range_name_the_field(field, value):
    with pytest.raises(InvalidRequest, match=field):
        GenerationSettings(**{field: value})


def test_paste_back_is_applied_to_generated_images(canvas):
    noise = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    pasted = paste_back(noise, canvas)
    assert np.array_equal(pasted[:, canvas.product_alpha == 0], noise[:, canvas.product_alpha == 0])
