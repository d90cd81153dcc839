"""Early screening in the one loop, on the tiny zoo: torch and onnxruntime runners with RFNet judging.

The served loop (real Triton) is tested in tests/test_screening_served.py.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from rfad.canvas import CanvasSpec, paste_back, prepare_canvas
from rfad.contract import MAX_SEED, InvalidRequest
from rfad.models.diffusion import load_diffusion_models
from rfad.models.judge import load_judge_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.denoise import GenerationCancelled, combine_guidance, denoise_steps, guided_noise, start_denoising, to_uint8
from rfad.pipeline.generate import generate
from rfad.pipeline.judge import RunnerJudge
from rfad.pipeline.request import prepare_request
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.tiny.products import draw_product

SIZE = 64  # latent 8x8: the smallest canvas; every block of the tiny models still runs
PROMPT, CAPTION = "a bottle on a marble table", "red bottle"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two torch threads on two cores shared with other processes spin against each other (10x
    slower here); one thread keeps these tests' time low wherever they run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def canvas():
    return prepare_canvas(draw_product("bottle", 30, 50), CanvasSpec(width=SIZE, height=SIZE, mask_dilation=4))


@pytest.fixture(scope="module")
def torch_runner(tiny_zoo):
    model_set = ModelSet.resolve(tiny_zoo)
    return TorchRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))


def _run(runner, canvas, **settings):
    previews = []
    result = generate(runner, canvas, PROMPT, GenerationSettings(**settings), caption=CAPTION,
                      judge=RunnerJudge(runner), on_preview=previews.append)
    return result, previews


def _screened(result):
    return [(c.seed, c.attempt, c.step) for c in result.screened]


# T = 4 steps, screen_at 0.5: screened at step 2, each slot refilled at most floor(4 / 2) = 2 times.
EVERYTHING = dict(steps=4, max_attempts=2, threshold=1.0, screen_at=0.5, screen_threshold=1.0)


def test_a_threshold_of_one_screens_every_candidate_up_to_the_bound(torch_runner, canvas):
    progress = []
    result = generate(torch_runner, canvas, PROMPT, GenerationSettings(**EVERYTHING), caption=CAPTION,
                      judge=RunnerJudge(torch_runner), on_step=lambda done, total: progress.append((done, total)))
    # Per attempt: two candidates screened out at step 2, the third (the slot's last refill) runs
    # to the end unscreened; seeds stay seed + i in draw order across attempts.
    assert _screened(result) == [(0, 1, 2), (1, 1, 2), (3, 2, 2), (4, 2, 2)]
    assert [(c.seed, c.attempt) for c in result.candidates] == [(2, 1), (5, 2)] and result.attempts == 2
    assert all(0 <= c.p_available < 1 for c in result.screened)
    # Each attempt runs T + 2 x 2 = 8 batched steps, the bound the progress reports.
    assert progress[-1] == (16, 16) and [d for d, _ in progress] == list(range(1, 17))
    # A replacement starts at step 0 from its own seed: the same image as that seed run alone.
    alone, _ = _run(torch_runner, canvas, steps=4, seed=2, max_attempts=1, threshold=1.0)
    assert np.array_equal(alone.candidates[0].image, result.candidates[0].image)
    assert result.timings["screen"] > 0


def test_the_screening_p_is_rfnet_on_the_x0_prediction_at_the_step(torch_runner, canvas):
    """Recomputed independently: x_t after one step, eps at step 2, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar),
    decoded, the product pasted back, judged."""
    result, previews = _run(torch_runner, canvas, **{**EVERYTHING, "max_attempts": 1})
    settings = GenerationSettings(steps=4)
    prepared = prepare_request(torch_runner, canvas, PROMPT)
    batch = start_denoising(torch_runner, prepared, [0], settings)
    x_t = denoise_steps(torch_runner, batch, settings, stop_at=1)
    t = batch.timesteps[1]
    with torch.no_grad():
        eps = combine_guidance(*guided_noise(torch_runner, batch, x_t, t, settings.controlnet_scale),
                               settings.guidance_scale)
        abar = batch.scheduler.alphas_cumprod[int(t)]
        image = paste_back(to_uint8(torch_runner.vae_decoder((x_t - (1 - abar).sqrt() * eps) / abar.sqrt())), canvas)
    judge = RunnerJudge(torch_runner)
    expected = judge(image, judge.prepare(canvas, CAPTION))[0]
    assert np.allclose(result.screened[0].probabilities, expected, atol=1e-5)
    assert previews[0].seed == 0 and previews[0].screened_out and np.abs(
        previews[0].image.astype(int) - image[0].astype(int)).max() <= 1


def test_a_threshold_of_zero_screens_nothing_and_changes_no_image(torch_runner, canvas):
    plain, _ = _run(torch_runner, canvas, steps=4, candidates=2, num_images=2, max_attempts=1, threshold=1.0)
    screened, previews = _run(torch_runner, canvas, steps=4, candidates=2, num_images=2, max_attempts=1, threshold=1.0,
                              screen_at=0.5, screen_threshold=0.0)
    assert screened.screened == [] and [(p.seed, p.step, p.screened_out) for p in previews] == [(0, 2, False),
                                                                                              (1, 2, False)]
    for a, b in zip(plain.candidates, screened.candidates):
        assert a.seed == b.seed and np.array_equal(a.image, b.image)
        assert np.allclose(a.probabilities, b.probabilities)


@pytest.mark.parametrize("sd", ["sd15", "sd15-inpaint"])
def test_a_replacement_runs_beside_a_candidate_further_along_and_the_result_is_deterministic(torch_runner, tiny_zoo,
                                                                                            canvas, sd):
    """K = 2, screened at step 3 of 4 (one refill per slot): the threshold between the two previews
    screens exactly one; its replacement (seed 2) denoises in one batch with the survivor, at other
    timesteps, and each finishes with the image it has alone (up to a batched convolution's rounding);
    with the 9-channel inpainting UNet the replacement brings its own masked-image latents."""
    runner = torch_runner
    if sd != "sd15":
        model_set = ModelSet.resolve(tiny_zoo).with_overrides(sd=tiny_zoo / sd)
        runner = TorchRunner(load_diffusion_models(model_set), judge=torch_runner.judge_models)
    request = dict(steps=4, candidates=2, num_images=2, max_attempts=1, threshold=1.0, screen_at=0.75)
    _, previews = _run(runner, canvas, **request, screen_threshold=0.0)
    p = [preview.p_available for preview in previews]
    assert p[0] != p[1]
    low = int(np.argmin(p))
    request["screen_threshold"] = (p[0] + p[1]) / 2
    first, _ = _run(runner, canvas, **request)
    again, _ = _run(runner, canvas, **request)
    assert _screened(first) == [(low, 1, 3)] and math.isclose(first.screened[0].p_available, p[low], abs_tol=1e-6)
    slots = [2, 1] if low == 0 else [0, 2]  # the replacement takes the screened candidate's slot
    assert [c.seed for c in first.candidates] == slots
    for candidate in first.candidates:
        alone, _ = _run(runner, canvas, steps=4, seed=candidate.seed, max_attempts=1, threshold=1.0)
        assert np.abs(alone.candidates[0].image.astype(int) - candidate.image.astype(int)).max() <= 2
    assert _screened(again) == _screened(first)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first.candidates, again.candidates))


def test_cancellation_between_screened_steps(torch_runner, canvas):
    seen = []
    with pytest.raises(GenerationCancelled, match="at most 8 with screening"):
        generate(torch_runner, canvas, PROMPT, GenerationSettings(**EVERYTHING), caption=CAPTION,
                 judge=RunnerJudge(torch_runner), on_step=lambda done, total: seen.append(done),
                 should_stop=lambda: len(seen) >= 3)
    assert seen == [1, 2, 3]  # stopped after a refill started, before its next step


@pytest.mark.parametrize("values, field, words", [
    (dict(screen_at=0.0, screen_threshold=0.5), "screen_at", "outside the allowed range (0, 1)"),
    (dict(screen_at=1.0, screen_threshold=0.5), "screen_at", "outside the allowed range (0, 1)"),
    (dict(screen_at=float("nan"), screen_threshold=0.5), "screen_at", "finite"),
    (dict(screen_at="half", screen_threshold=0.5), "screen_at", "expected a finite number"),
    (dict(steps=4, screen_at=0.1, screen_threshold=0.5), "screen_at", "rounds to step 0; the screening step must be "
                                                                       "within 1..3"),
    (dict(steps=4, screen_at=0.9, screen_threshold=0.5), "screen_at", "rounds to step 4"),
    (dict(screen_at=0.25), "screen_threshold", "required with screen_at"),
    (dict(screen_threshold=0.5), "screen_threshold", "given without screen_at"),
    (dict(screen_at=0.25, screen_threshold=1.5), "screen_threshold", "outside the allowed range [0.0, 1.0]"),
])
def test_screening_settings_are_refused_naming_the_field(values, field, words):
    with pytest.raises(InvalidRequest, match=rf"^{field}: .*{re.escape(words)}"):
        GenerationSettings(**values)


def test_screening_widens_the_seed_room_and_needs_a_judge(tiny_zoo, canvas):
    # 40 steps screened at 10: each slot may draw 4 more seeds, so 2 x 5 x 3 = 30 seeds in all.
    GenerationSettings(seed=MAX_SEED - 29, candidates=2, max_attempts=3, screen_at=0.25, screen_threshold=0.5)
    with pytest.raises(InvalidRequest, match=f"seed: .* 30 candidate seeds .* largest seed allowed for this request "
                                             f"is {MAX_SEED - 29}"):
        GenerationSettings(seed=MAX_SEED - 28, candidates=2, max_attempts=3, screen_at=0.25, screen_threshold=0.5)
    runner = TorchRunner(load_diffusion_models(ModelSet.resolve(tiny_zoo)))
    with pytest.raises(InvalidRequest, match="screen_at: early screening needs a judge"):
        generate(runner, canvas, PROMPT, GenerationSettings(steps=2, screen_at=0.5, screen_threshold=0.5))


def test_the_onnxruntime_runner_screens_as_the_torch_runner(torch_runner, tiny_onnx, canvas):
    from rfad.pipeline.onnx_runner import OnnxRunner

    request = dict(steps=4, candidates=2, num_images=2, max_attempts=1, threshold=1.0, screen_at=0.5,
                   screen_threshold=1.0)
    ours, _ = _run(torch_runner, canvas, **request)
    onnx, _ = _run(OnnxRunner(tiny_onnx, merged=True), canvas, **request)
    assert _screened(onnx) == _screened(ours) == [(0, 1, 2), (1, 1, 2), (2, 1, 2), (3, 1, 2)]
    assert [c.seed for c in onnx.candidates] == [c.seed for c in ours.candidates] == [4, 5]
    for a, b in zip(onnx.screened + onnx.candidates, ours.screened + ours.candidates):
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-4)
    for a, b in zip(onnx.candidates, ours.candidates):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


def test_rfad_generate_screens_and_records_it_in_the_sidecar(tiny_zoo, product_png, tmp_path):
    import json

    from click.testing import CliRunner

    from rfad.app.cli import main

    base = ["generate", "--models", str(tiny_zoo), "--product", str(product_png), "--prompt", PROMPT, "--caption",
            CAPTION, "--steps", "4", "--size", "64", "--max-attempts", "1", "--threshold", "1.0"]
    result = CliRunner().invoke(main, base + ["--screen-at", "0.5", "--screen-threshold", "1.0", "--out",
                                              str(tmp_path / "o.png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 candidate(s) screened out" in result.output
    sidecar = json.loads((tmp_path / "o.json").read_text())
    assert [(s["seed"], s["step"]) for s in sidecar["screened"]] == [(0, 2), (1, 2)]
    assert [c["seed"] for c in sidecar["candidates"]] == [2] and sidecar["timings_s"]["screen"] > 0
    assert sidecar["settings"]["screen_at"] == 0.5 and sidecar["settings"]["screen_threshold"] == 1.0
    refused = CliRunner().invoke(main, base + ["--screen-at", "0.5", "--out", str(tmp_path / "x.png")])
    assert refused.exit_code == 1 and "screen_threshold: required with screen_at" in refused.output
