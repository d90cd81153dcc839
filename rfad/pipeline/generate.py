"""Recurrent Generation: attempts of K candidates until enough are judged Available.

The loop of docs/design.md (one ad request, step 3), written once for every runner. Without a judge every
candidate is kept (plain generation). With a judge, candidates with p(Available) >= threshold
are kept; the loop stops as soon as ``num_images`` are kept or after ``max_attempts``; if too
few passed, the best remaining candidates are returned flagged not available (not an error).
With early screening on (``screen_at``), each attempt runs :func:`rfad.pipeline.screening.screened_attempt`
instead of :func:`rfad.pipeline.denoise.denoise`; everything else is the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from rfad.canvas import AdCanvas, paste_back
from rfad.contract import InvalidRequest
from rfad.pipeline.denoise import denoise, to_uint8
from rfad.pipeline.request import PreparedRequest, prepare_request
from rfad.pipeline.runner import ComponentRunner
from rfad.pipeline.screening import ScreenedCandidate, ScreenedPreview, Screening, SeedDraw, screened_attempt
from rfad.pipeline.settings import GenerationSettings


class Judge(Protocol):
    """Judges finished ad images. ``prepare`` runs once per request (caption embedding, product image);
    ``__call__`` returns class probabilities float [N, 5] for uint8 images [N, H, W, 3], column 0 = Available."""

    def prepare(self, canvas: AdCanvas, caption: str) -> object: ...

    def __call__(self, images: np.ndarray, state: object) -> np.ndarray: ...


@dataclass(eq=False)  # identity semantics: candidates hold arrays
class Candidate:
    """One generated image: ``image`` uint8 [H, W, 3] with the product pasted back."""

    seed: int
    attempt: int
    image: np.ndarray
    probabilities: np.ndarray | None = None  # float [5], None without a judge
    available: bool | None = None  # None without a judge

    @property
    def p_available(self) -> float:
        return float(self.probabilities[0]) if self.probabilities is not None else float("nan")


@dataclass
class GenerationResult:
    """``images``: the ``num_images`` returned candidates (available first); ``candidates``: all
    finished ones; ``screened``: those early screening replaced, in draw order (empty when off)."""

    images: list[Candidate]
    candidates: list[Candidate]
    attempts: int
    timings: dict[str, float] = field(default_factory=dict)
    screened: list[ScreenedCandidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-friendly summary (no pixels)."""

        def describe(c: Candidate) -> dict:
            return {
                "seed": c.seed, "attempt": c.attempt, "available": c.available,
                "probabilities": None if c.probabilities is None else [round(float(p), 6) for p in c.probabilities],
            }

        return {
            "attempts": self.attempts,
            "images": [describe(c) for c in self.images],
            "candidates": [describe(c) for c in self.candidates],
            "screened": [c.to_dict() for c in self.screened],
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


def generate(runner: ComponentRunner, canvas: AdCanvas, prompt: str, settings: GenerationSettings, *,
             negative_prompt: str = "", caption: str = "", judge: Judge | None = None,
             latents: torch.Tensor | None = None, on_step: Callable[[int, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             prepared: PreparedRequest | None = None, screen_judge: Judge | None = None,
             on_preview: Callable[[ScreenedPreview], None] | None = None) -> GenerationResult:
    """Run the regenerate-until-available loop for one request.

    ``latents`` (float [K, 4, h, w]) replaces the first attempt's initial noise (parity tests).
    ``on_step(done, total)`` reports batched denoising steps over all attempts (``total``: the
    most the request may run); ``should_stop`` is checked between steps (raises
    :class:`rfad.pipeline.denoise.GenerationCancelled`). With ``settings.screen_at``, candidates
    are screened by ``screen_judge`` (default: ``judge``); ``on_preview`` is told every preview
    judged. Screening without a judge is an :class:`rfad.contract.InvalidRequest` naming ``screen_at``.
    """
    if settings.screening and judge is None:
        raise InvalidRequest("screen_at: early screening needs a judge, and this runner has none (no RFNet)")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if prepared is None:
        prepared = prepare_request(runner, canvas, prompt, negative_prompt)
    judge_state = judge.prepare(canvas, caption) if judge is not None else None
    screening = Screening.for_request(settings, canvas, caption, judge, judge_state, screen_judge, on_preview)
    timings["prepare"] = time.perf_counter() - start

    per_attempt = settings.candidates
    max_attempts = settings.max_attempts if judge is not None else -(-settings.num_images // per_attempt)
    # The most batched steps one attempt may run: T, plus the refills' steps with screening.
    most = settings.steps + settings.screen_replacements * (settings.screen_step or 0)
    candidates: list[Candidate] = []
    kept: list[Candidate] = []
    screened: list[ScreenedCandidate] = []
    draw = SeedDraw(settings.seed)
    attempt = steps_done = 0
    timings["denoise"] = timings["judge"] = 0.0

    def report(done: int, _total: int) -> None:
        if on_step is not None:
            on_step(steps_done + done, max_attempts * most)

    while attempt < max_attempts and len(kept) < settings.num_images:
        initial = latents if attempt == 0 else None
        t0 = time.perf_counter()
        if screening is None:
            seeds = draw.take(per_attempt)
            decoded = denoise(runner, prepared, seeds, settings, initial, report, should_stop)
            steps_done += settings.steps
        else:
            outcome = screened_attempt(runner, prepared, draw, settings, screening, attempt + 1, initial, report,
                                       should_stop)
            seeds, screened = outcome.seeds, screened + outcome.screened
            steps_done += outcome.batched_steps
            with torch.no_grad():
                decoded = runner.vae_decoder(outcome.latents)
        images = paste_back(to_uint8(decoded), canvas)
        timings["denoise"] += time.perf_counter() - t0
        attempt += 1
        probabilities = None
        if judge is not None:
            t0 = time.perf_counter()
            probabilities = np.asarray(judge(images, judge_state), dtype=np.float64)
            timings["judge"] += time.perf_counter() - t0
        for j, seed in enumerate(seeds):
            candidate = Candidate(seed=seed, attempt=attempt, image=images[j])
            if probabilities is not None:
                candidate.probabilities = probabilities[j]
                candidate.available = bool(probabilities[j][0] >= settings.threshold)
            candidates.append(candidate)
            if (candidate.available or judge is None) and len(kept) < settings.num_images:
                kept.append(candidate)

    if len(kept) < settings.num_images:
        kept_ids = {id(c) for c in kept}
        rest = sorted((c for c in candidates if id(c) not in kept_ids), key=lambda c: -c.p_available)
        kept += rest[: settings.num_images - len(kept)]
    if screening is not None:
        timings["screen"] = screening.seconds  # part of "denoise": decoding and judging the previews
    timings["total"] = time.perf_counter() - start
    return GenerationResult(images=kept, candidates=candidates, attempts=attempt, timings=timings, screened=screened)
