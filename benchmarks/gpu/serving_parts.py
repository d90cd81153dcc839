"""The GPU check's serving-side parts: one attempt of the torch runner beside diffusers'
``StableDiffusionControlNetInpaintPipeline`` on the same modules and settings, the same runner
under ``torch.compile``, and the judge's latency.

Generation rows (one per backend and K): seconds per attempt (prompt encoding, init-image
encoding, ``steps`` DDIM steps with CFG and ControlNet, decoding; rfad's also pastes the product
back), iterations per second over the whole attempt (``steps / attempt``), and, for rfad's
runner, the rate of the denoising step alone (one CFG ControlNet + UNet evaluation of 2K rows,
the figure stable-fast's 72.6 it/s anchor counts) with whether its output was finite. Peak
memory per row. The ratio is diffusers' seconds per attempt over rfad's (> 1: rfad is faster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from measure import Meter

PROMPT = "a bottle on a marble table, studio light"
CAPTION = "glass bottle, 500 ml"


def load_served(zoo: Path, device: torch.device, dtype: torch.dtype, compile_mode: str | None = None):
    """The torch runner over the zoo's diffusion and judge models, all in ``dtype`` on ``device``."""
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.torch_runner import TorchRunner

    model_set = ModelSet.resolve(zoo)
    diffusion = load_diffusion_models(model_set, dtype=dtype, device=device)
    judge = load_judge_models(model_set, device)
    for module in judge.modules.values():
        module.to(dtype=dtype)  # the judge sees the runner's images in the runner's dtype
    return TorchRunner(diffusion, device, judge=judge, compile_mode=compile_mode)


def _canvas(size: int):
    from rfad.canvas import CanvasSpec, prepare_canvas
    from rfad.tiny.products import draw_product

    return prepare_canvas(draw_product("bottle"), CanvasSpec(width=size, height=size))


def _settings(plan, k: int):
    from rfad.pipeline.settings import GenerationSettings

    return GenerationSettings(steps=plan.steps, guidance_scale=plan.guidance, controlnet_scale=plan.controlnet_scale,
                              seed=0, candidates=k, num_images=k, max_attempts=1)


def _diffusers_pipeline(runner):
    from diffusers import DDIMScheduler, StableDiffusionControlNetInpaintPipeline

    m = runner.models
    pipe = StableDiffusionControlNetInpaintPipeline(
        vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet, controlnet=m.controlnet,
        scheduler=DDIMScheduler.from_config(m.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _step_rate(runner, canvas, settings, meter: Meter, calls: int) -> dict:
    """One CFG ControlNet + UNet evaluation of the attempt's 2K rows at the first timestep."""
    from rfad.pipeline.denoise import guided_noise, start_denoising
    from rfad.pipeline.request import prepare_request

    with torch.no_grad():
        prepared = prepare_request(runner, canvas, PROMPT)
        batch = start_denoising(runner, prepared, list(range(settings.candidates)), settings)
        outputs = []

        def step():
            outputs[:] = guided_noise(runner, batch, batch.latents, batch.timesteps[0], settings.controlnet_scale)

        timing = meter.times(step, calls)
        finite = all(bool(torch.isfinite(t).all()) for t in outputs if t is not None)
    return {"step_s": timing["median_s"], "step_it_s": 1.0 / timing["median_s"], "noise_finite": finite}


def _row(backend: str, k: int, plan, timing: dict, memory: dict, **extra) -> dict:
    return {"part": "generation", "backend": backend, "candidates": k, "size": plan.size, "steps": plan.steps,
            "attempt_s": timing["median_s"], "attempt_min_s": timing["min_s"], "attempt_max_s": timing["max_s"],
            "attempt_it_s": plan.steps / timing["median_s"], "repeats": timing["repeats"],
            "first_attempt_s": timing["warmup_s"][0], **memory, **extra}


def bench_generation(runner, plan, meter: Meter, candidates=None, backend: str = "rfad torch runner",
                     with_diffusers: bool = True) -> list[dict]:
    """Rows of rfad's runner (and diffusers' pipeline on the same modules) for each K of ``candidates``."""
    from PIL import Image

    from rfad.pipeline.generate import generate

    canvas = _canvas(plan.size)
    images = {"image": Image.fromarray(canvas.init_image), "mask_image": Image.fromarray(canvas.mask),
              "control_image": Image.fromarray(canvas.control_image)}
    pipe = _diffusers_pipeline(runner) if with_diffusers else None
    rows = []
    for k in candidates or plan.candidates:
        settings = _settings(plan, k)
        meter.reset_peak()
        ours = meter.times(lambda: generate(runner, canvas, PROMPT, settings), plan.attempt_repeats)
        ours_memory = meter.peak()
        step = _step_rate(runner, canvas, settings, meter, plan.step_calls)
        rows.append(_row(backend, k, plan, ours, ours_memory, **step))
        if pipe is None:
            continue

        def diffusers_attempt(k=k):
            pipe(prompt=PROMPT, **images, height=plan.size, width=plan.size, num_inference_steps=plan.steps,
                 guidance_scale=plan.guidance, controlnet_conditioning_scale=plan.controlnet_scale, eta=0.0,
                 num_images_per_prompt=k, generator=torch.Generator("cpu").manual_seed(0), output_type="np")

        meter.reset_peak()
        theirs = meter.times(diffusers_attempt, plan.attempt_repeats)
        rows.append(_row("diffusers StableDiffusionControlNetInpaintPipeline", k, plan, theirs, meter.peak()))
        rows[-2]["x_diffusers"] = theirs["median_s"] / ours["median_s"]
    return rows


def bench_judge(runner, plan, meter: Meter) -> list[dict]:
    """``RunnerJudge`` (the loop's judge: uint8 images in, depth, saliency and RFNet, probabilities
    back on the host) at each batch of ``plan.judge_batches``; the caption is encoded once, as per request."""
    from rfad.pipeline.judge import RunnerJudge

    judge = RunnerJudge(runner)
    state = judge.prepare(_canvas(plan.size), CAPTION)
    rng = np.random.default_rng(0)
    rows = []
    for batch in plan.judge_batches:
        images = rng.integers(0, 256, (batch, plan.size, plan.size, 3), dtype=np.uint8)
        meter.reset_peak()
        timing = meter.times(lambda: judge(images, state), plan.judge_repeats, plan.judge_warmup)
        rows.append({"part": "judge", "batch": batch, "size": plan.size, "judge_size": runner.info.judge_size,
                     "latency_s": timing["median_s"], "latency_min_s": timing["min_s"],
                     "latency_max_s": timing["max_s"], "per_image_s": timing["median_s"] / batch,
                     "repeats": timing["repeats"], **meter.peak()})
    return rows
