"""Early screening: judge every candidate's x0-prediction mid-loop and replace the hopeless ones.

At step s (:func:`rfad.contract.screening_step`: ``screen_at`` x steps, rounded half up) the
scheduler's x0-prediction of each live candidate is decoded (VAE decoder), the product pasted
back and the result judged (depth, saliency, RFNet: the runner's judge, or a screening judge of
its own). A candidate whose p(Available) is below ``screen_threshold`` stops; its slot takes a
fresh candidate, the next seed of the request, which starts at step 0, so the batch stays full.
Safe for inpainting: the product's pixels are fixed, only the background's layout is uncertain
early, and that layout is what the early x0-prediction already shows.

The accounting of one attempt (:func:`screened_attempt`):

- an attempt has K slots (``candidates``) and ends when every slot holds a finished candidate
  (all T steps); those K are decoded and judged by the final judge as without screening, and
  ``max_attempts`` counts such attempts (screened candidates are not attempts);
- a slot is refilled at most R = floor(T / s) times per attempt
  (:func:`rfad.contract.screening_replacements`); the candidate it holds then is not screened and
  runs to the end. The screened-out candidates of a slot so cost at most T steps: an attempt
  runs at most T + R s <= 2T batched steps, a request at most twice the steps (and so the
  deadline) of the same request unscreened, and draws at most K (1 + R) seeds per attempt;
- seeds are drawn in order (:class:`SeedDraw`): the i-th candidate of the request, screened or
  not, uses ``seed + i``; refills drawn at the same step take seeds in slot order;
- ``should_stop`` is checked before every batched step, so cancellation and deadlines act
  between steps as without screening;
- deterministic: which candidates share a batch at each step follows from the request alone, so
  the same request gives the same images (a candidate's image can differ from its run alone by
  the float rounding of a batched convolution, as any batched candidate's does).

Candidates at different steps share one batch: the ControlNet and UNet take a timestep per
candidate, and the DDIM update runs per group of candidates at the same step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from rfad.canvas import AdCanvas, paste_back
from rfad.pipeline.denoise import (DenoisingBatch, GenerationCancelled, combine_guidance, guided_noise, replace_rows,
                                   scheduler_step_x0, select_rows, start_denoising, to_uint8)
from rfad.pipeline.request import PreparedRequest
from rfad.pipeline.runner import ComponentRunner
from rfad.pipeline.settings import GenerationSettings


@dataclass(frozen=True)
class ScreenedPreview:
    """One candidate judged at the screening step: its seed and attempt, the step, the decoded
    x0-prediction with the product pasted back (``image`` uint8 [H, W, 3]), the screening judge's
    class probabilities float [5], and whether it was screened out (replaced)."""

    seed: int
    attempt: int
    step: int
    image: np.ndarray
    probabilities: np.ndarray
    screened_out: bool

    @property
    def p_available(self) -> float:
        return float(self.probabilities[0])


@dataclass(frozen=True)
class ScreenedCandidate:
    """A candidate early screening stopped and replaced: seed, attempt, step, class probabilities float [5]."""

    seed: int
    attempt: int
    step: int
    probabilities: np.ndarray

    @property
    def p_available(self) -> float:
        return float(self.probabilities[0])

    def to_dict(self) -> dict:
        return {"seed": self.seed, "attempt": self.attempt, "step": self.step,
                "p_available": round(self.p_available, 6),
                "probabilities": [round(float(p), 6) for p in self.probabilities]}


@dataclass
class ScreenedAttempt:
    """What :func:`screened_attempt` returns: the seeds of the K finished candidates in slot order,
    their final latents float [K, 4, h, w], the candidates screened out (in draw order) and the
    batched denoising steps the attempt ran."""

    seeds: list[int]
    latents: torch.Tensor
    screened: list[ScreenedCandidate]
    batched_steps: int


class SeedDraw:
    """The request's seeds in draw order: the i-th candidate drawn uses ``first + i``."""

    def __init__(self, first: int):
        self.next = int(first)

    def take(self, count: int) -> list[int]:
        seeds = list(range(self.next, self.next + count))
        self.next += count
        return seeds


@dataclass
class Screening:
    """What screens a request's candidates: the judge with its per-request state, the step s, the
    threshold and the refills per slot (:class:`GenerationSettings` ``screen_step``,
    ``screen_threshold``, ``screen_replacements``). ``observe`` is told every judged preview
    (the x0-preview dataset writer records them)."""

    judge: object  # rfad.pipeline.generate.Judge
    state: object
    canvas: AdCanvas
    step: int
    threshold: float
    replacements: int
    observe: Callable[[ScreenedPreview], None] | None = None
    seconds: float = 0.0  # spent decoding and judging previews (the cost screening adds)

    @classmethod
    def for_request(cls, settings: GenerationSettings, canvas: AdCanvas, caption: str, judge, judge_state,
                    screen_judge=None, observe: Callable[[ScreenedPreview], None] | None = None) -> "Screening | None":
        """The screening of one request (None when ``settings`` has it off): ``screen_judge`` screens,
        prepared for the request, else the request's ``judge`` with its ``judge_state``."""
        if not settings.screening:
            return None
        screener = screen_judge or judge
        state = judge_state if screener is judge else screener.prepare(canvas, caption)
        return cls(screener, state, canvas, settings.screen_step, settings.screen_threshold,
                   settings.screen_replacements, observe)

    def judge_previews(self, runner: ComponentRunner, x0: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """x0-predictions float [N, 4, h, w] -> (previews uint8 [N, H, W, 3] with the product pasted
        back, class probabilities float [N, 5])."""
        start = time.perf_counter()
        with torch.no_grad():
            previews = paste_back(to_uint8(runner.vae_decoder(x0)), self.canvas)
        probabilities = np.asarray(self.judge(previews, self.state), dtype=np.float64)
        self.seconds += time.perf_counter() - start
        return previews, probabilities


def _step_each(batch: DenoisingBatch, steps: list[int], noise_pred: torch.Tensor, latents: torch.Tensor,
               eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The DDIM update of candidates at their own steps (``steps[j]`` for candidate j): one
    :func:`scheduler_step_x0` per group at the same step. Returns (next latents, x0-predictions)."""
    if len(set(steps)) == 1:
        return scheduler_step_x0(batch, steps[0], noise_pred, latents, eta)
    following, x0 = torch.empty_like(latents), torch.empty_like(latents)
    for i in sorted(set(steps)):
        rows = [j for j, step in enumerate(steps) if step == i]
        following[rows], x0[rows] = scheduler_step_x0(select_rows(batch, rows), i, noise_pred[rows], latents[rows], eta)
    return following, x0


@torch.no_grad()
def screened_attempt(runner: ComponentRunner, prepared: PreparedRequest, draw: SeedDraw, settings: GenerationSettings,
                     screening: Screening, attempt: int, latents: torch.Tensor | None = None,
                     on_step: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> ScreenedAttempt:
    """One attempt of ``settings.candidates`` slots with early screening (the module docstring's rules).

    ``latents`` float [K, 4, h, w], if given, replaces the initial noise of the first K candidates.
    ``on_step(done, most)`` is called after each batched step (``most`` = T + R s, the bound);
    ``should_stop()`` is checked before each and raises :class:`GenerationCancelled`.
    """
    total, k = settings.steps, settings.candidates
    batch = start_denoising(runner, prepared, draw.take(k), settings, latents)
    current = batch.latents.clone()
    done = [0] * k  # steps each slot's candidate has run
    refills = [0] * k
    screened: list[ScreenedCandidate] = []
    most = total + screening.replacements * screening.step
    live_batch: tuple[tuple[int, ...], DenoisingBatch] | None = None
    batched_steps = 0
    while min(done) < total:
        if should_stop is not None and should_stop():
            raise GenerationCancelled(f"cancelled before step {batched_steps + 1} of attempt {attempt} "
                                      f"(at most {most} with screening)")
        live = tuple(j for j in range(k) if done[j] < total)
        if live_batch is None or live_batch[0] != live:  # kept while the same slots run: constants are sent once
            live_batch = (live, batch if len(live) == k else select_rows(batch, live))
        sub, rows, steps = live_batch[1], list(live), [done[j] for j in live]
        latents_now = current[rows]
        uncond, cond = guided_noise(runner, sub, latents_now, batch.timesteps[steps], settings.controlnet_scale)
        current[rows], x0 = _step_each(sub, steps, combine_guidance(uncond, cond, settings.guidance_scale),
                                       latents_now, settings.eta)
        for j in live:
            done[j] += 1
        batched_steps += 1
        if on_step is not None:
            on_step(batched_steps, most)
        due = [n for n, j in enumerate(live) if done[j] == screening.step and refills[j] < screening.replacements]
        if not due:
            continue
        previews, probabilities = screening.judge_previews(runner, x0[due])
        out = []
        for n, image, p in zip(due, previews, probabilities):
            j = live[n]
            below = bool(p[0] < screening.threshold)
            if screening.observe is not None:
                screening.observe(ScreenedPreview(batch.seeds[j], attempt, screening.step, image, p, below))
            if below:
                screened.append(ScreenedCandidate(batch.seeds[j], attempt, screening.step, p))
                out.append(j)
        if out:
            fresh = start_denoising(runner, prepared, draw.take(len(out)), settings)
            batch = replace_rows(batch, out, fresh)
            live_batch = None
            current[out] = fresh.latents
            for j in out:
                done[j] = 0
                refills[j] += 1
    return ScreenedAttempt(list(batch.seeds), current, screened, batched_steps)
