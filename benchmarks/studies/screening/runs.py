"""The screening benchmark's measurements, one record per candidate or request (stage public APIs only).

- :func:`probe`: one candidate denoised alone; at each probe step its x0-prediction is decoded,
  the product pasted back and judged by every judge given (what screening at that step would
  see), the final image judged and labelled by the oracle: the AUC-by-step records;
- :func:`local_request`: one request through :func:`rfad.pipeline.generate.generate` in process,
  with the CPU seconds of this process (all its threads) and the wall time;
- :func:`served_request`: the same request through the served pipeline (``rfad.client``), with
  the CPU seconds of the Triton server's process tree.

Products come from the miniature world's request stream (:func:`rfad.trainer.data.miniworld.product_requests`)
with RF-mini's split by product (:func:`rfad.trainer.data.miniworld.product_splits`): with RF-mini's
product count and seed, the validation and test products are RF-mini's own, untouched by training.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import torch

from rfad.pipeline.denoise import combine_guidance, guided_noise, scheduler_step_x0, start_denoising
from rfad.pipeline.generate import generate
from rfad.pipeline.request import prepare_request
from rfad.pipeline.screening import Screening
from rfad.pipeline.settings import GenerationSettings
from rfad.miniworld.oracle import label_ad
from rfad.trainer.api import product_requests, product_splits

# Seeds of the benchmark's candidates: product p, request j -> BENCH_SEED + p * PRODUCT_STRIDE + j * REQUEST_STRIDE
# (above RF-mini's seeds, below 10^7 x seed; REQUEST_STRIDE leaves room for every seed a screened request may draw).
BENCH_SEED = 950_000_000
PRODUCT_STRIDE = 100_000
REQUEST_STRIDE = 1_000


@dataclass
class BenchProduct:
    """A product of the request stream: its index there (``id``), split, and scene (product cut-out,
    canvas as the miniature world places it, prompt, caption)."""

    id: int
    split: str
    scene: object  # rfad.trainer.data.scenes.Scene

    def oracle(self, image: np.ndarray) -> str:
        canvas = self.scene.canvas
        return label_ad(image, np.asarray(canvas.product_rgba), canvas.product_alpha).label

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.scene.product.save(buffer, format="PNG")
        return buffer.getvalue()


def world_products(n_world: int, seed: int, available_share: float, val: int, test: int) -> dict[str, list[BenchProduct]]:
    """The first ``val`` validation and ``test`` test products of the stream's ``n_world`` products
    (RF-mini's split: 15 % validation, 15 % test, by product)."""
    scenes = product_requests(n_world, seed, available_share)
    splits = product_splits(n_world, seed, 0.15, 0.15)
    chosen = {"val": [], "test": []}
    for index, (scene, split) in enumerate(zip(scenes, splits)):
        if split in chosen and len(chosen[split]) < {"val": val, "test": test}[split]:
            chosen[split].append(BenchProduct(index, split, scene))
    return chosen


def request_seed(product: BenchProduct, request: int) -> int:
    return BENCH_SEED + product.id * PRODUCT_STRIDE + request * REQUEST_STRIDE


@torch.no_grad()
def probe(runner, judges: dict, product: BenchProduct, seed: int, settings: GenerationSettings,
          steps: list[int]) -> dict:
    """One candidate (``seed``) alone: p(Available) of its x0-preview at each of ``steps`` (after
    that many steps) by each judge of ``judges`` (name -> Judge), its final image's p by the first
    judge, and the oracle's label of the final image."""
    scene = product.scene
    prepared = prepare_request(runner, scene.canvas, scene.prompt)
    batch = start_denoising(runner, prepared, [seed], settings)
    screens = {name: Screening(judge, judge.prepare(scene.canvas, scene.caption), scene.canvas, 0, 0.0, 0)
               for name, judge in judges.items()}
    latents, early = batch.latents, {name: {} for name in judges}
    for i, t in enumerate(batch.timesteps):
        uncond, cond = guided_noise(runner, batch, latents, t, settings.controlnet_scale)
        latents, x0 = scheduler_step_x0(batch, i, combine_guidance(uncond, cond, settings.guidance_scale), latents,
                                        settings.eta)
        if i + 1 in steps:
            for name, screen in screens.items():
                early[name][str(i + 1)] = float(screen.judge_previews(runner, x0)[1][0, 0])
    final_screen = next(iter(screens.values()))
    final_image = final_screen.judge_previews(runner, latents)
    return {"product": product.id, "split": product.split, "seed": seed, "oracle": product.oracle(final_image[0][0]),
            "p_final": float(final_image[1][0, 0]), "p_by_step": early}


def _request_record(product: BenchProduct, seed: int, arm: str, settings: GenerationSettings, attempts: int,
                    screened: list[tuple[int, int, float]], available: bool, returned_oracle: str, cpu_s: float,
                    wall_s: float) -> dict:
    steps = attempts * settings.candidates * settings.steps + sum(step for _, step, _ in screened)
    oracle_available = returned_oracle == "Available"
    return {"product": product.id, "split": product.split, "seed": seed, "arm": arm, "attempts": attempts,
            "screened": [{"seed": s, "step": step, "p_available": round(p, 6)} for s, step, p in screened],
            "candidate_steps": steps, "cpu_s": cpu_s, "wall_s": wall_s, "judged_available": available,
            "oracle_returned": returned_oracle, "oracle_available": oracle_available,
            "oracle_available_images": int(oracle_available),
            "first_available_s": wall_s if available else None}


def local_request(runner, judge, screen_judge, product: BenchProduct, seed: int, settings: GenerationSettings,
                  arm: str) -> dict:
    """One request in process; CPU seconds of this process (every thread) and wall seconds."""
    scene = product.scene
    cpu, wall = time.process_time(), time.perf_counter()
    result = generate(runner, scene.canvas, scene.prompt, settings, caption=scene.caption, judge=judge,
                      screen_judge=screen_judge)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    returned = result.images[0]
    return _request_record(product, seed, arm, settings, result.attempts,
                           [(c.seed, c.step, c.p_available) for c in result.screened], bool(returned.available),
                           product.oracle(returned.image), cpu, wall)


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server process and every live descendant (the python
    backend's stub processes, where the models run)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # a process that ended between the listing and the read
            continue
        total += times.user + times.system
    return total


def served_request(client, server_pid: int, product: BenchProduct, seed: int, settings: GenerationSettings,
                   arm: str) -> dict:
    """One request through the served pipeline; CPU seconds of the server's process tree, wall seconds seen by the client."""
    from PIL import Image

    scene = product.scene
    values = {"screen_at": settings.screen_at, "screen_threshold": settings.screen_threshold} if settings.screening \
        else {}
    cpu, wall = server_cpu_seconds(server_pid), time.perf_counter()
    result = client.generate(product.png(), scene.prompt, caption=scene.caption, seed=seed, steps=settings.steps,
                             guidance_scale=settings.guidance_scale, candidates=settings.candidates, num_images=1,
                             max_attempts=settings.max_attempts, threshold=settings.threshold, deadline_s=3600,
                             **values)
    cpu, wall = server_cpu_seconds(server_pid) - cpu, time.perf_counter() - wall
    image = np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB"))
    return _request_record(product, seed, arm, settings, result.attempts,
                           list(zip(result.screened_seeds, result.screened_steps, result.screened_p)),
                           bool(result.available[0]), product.oracle(image), cpu, wall)
