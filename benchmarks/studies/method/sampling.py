"""Images of held-out products through the real loop, judged by the oracle and by RFNet.

Two measurements share the generation code of serving (:mod:`rfad.pipeline.denoise`,
:func:`rfad.pipeline.generate.generate`, :class:`rfad.pipeline.judge.RunnerJudge`):

- :func:`single_shot`: ``seeds`` one-attempt requests of one candidate per product. Every candidate's final
  image is labelled by the oracle, read for prompt fidelity and judged by RFNet; at the given
  fractions of the DDIM steps the x0-prediction x0 = (x_t - sqrt(1 - abar_t) eps~) / sqrt(abar_t)
  is decoded, the product pasted back, and judged by RFNet too (the early signal). The final images are exactly what
  ``generate`` returns for the same seeds: the same functions run in the same order.
- :func:`recurrent`: Recurrent Generation, up to ``max_attempts`` attempts of one candidate with
  RFNet in the loop; the returned image is labelled by the oracle. Request j of a product starts
  at the seed of single-shot candidate j, so its first attempt is that candidate's image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from rfad.canvas import AdCanvas, paste_back, prepare_canvas
from rfad.miniworld.canvas import MINIWORLD_CANVAS
from rfad.miniworld.oracle import label_ad
from rfad.pipeline.denoise import combine_guidance, guided_noise, scheduler_step, start_denoising, to_uint8
from rfad.pipeline.generate import generate
from rfad.pipeline.request import prepare_request
from rfad.pipeline.settings import GenerationSettings
from rfad.trainer.api import read_fidelity, resolve_path

# Seeds of the evaluation images: product index i, request j -> EVAL_SEED + i * SEED_STRIDE + j * max_attempts
# (RF-mini's own images use seeds below 10^7 * (seed + 1); these never meet them).
EVAL_SEED = 900_000_000
SEED_STRIDE = 1000


@dataclass
class Product:
    """A held-out request: the product placed on the miniature world's canvas, its prompt and caption."""

    id: str
    canvas: AdCanvas
    prompt: str
    caption: str

    def oracle(self, image: np.ndarray) -> str:
        """The oracle's label of ``image`` (uint8 [H, W, 3]) for this product."""
        return label_ad(image, np.asarray(self.canvas.product_rgba), self.canvas.product_alpha).label

    def fidelity(self, image: np.ndarray) -> dict | None:
        """Which attributes named by the prompt ``image`` shows (:func:`read_fidelity`); None when the
        prompt is not a miniature-world one."""
        try:
            return read_fidelity(image, np.asarray(self.canvas.product_rgba), self.canvas.product_alpha, self.prompt)
        except ValueError:
            return None


def test_products(rows, root, limit: int | None = None) -> list[Product]:
    """The distinct products of manifest ``rows`` (in order), each placed by ``MINIWORLD_CANVAS``."""
    seen, products = set(), []
    for row in rows:
        if row.product in seen:
            continue
        seen.add(row.product)
        canvas = prepare_canvas(resolve_path(root, row.product), MINIWORLD_CANVAS)
        products.append(Product(row.product, canvas, row.prompt, row.caption))
        if limit is not None and len(products) == limit:
            break
    return products


def request_seeds(index: int, seeds: int, max_attempts: int) -> list[int]:
    """The first seed of each of ``seeds`` requests of product ``index``."""
    return [EVAL_SEED + index * SEED_STRIDE + j * max_attempts for j in range(seeds)]


@torch.no_grad()
def _denoise_with_early(runner, prepared, seeds, settings: GenerationSettings, early_steps: list[int]):
    """(final decoded [K, 3, H, W], {step: decoded x0-prediction [K, 3, H, W]}) of one attempt.

    ``early_steps``: step indices i (0-based) after whose noise prediction x0 is decoded.
    """
    batch = start_denoising(runner, prepared, seeds, settings)
    alphas = batch.scheduler.alphas_cumprod
    latents, early = batch.latents, {}
    for i, t in enumerate(batch.timesteps):
        uncond, cond = guided_noise(runner, batch, latents, t, settings.controlnet_scale)
        eps = combine_guidance(uncond, cond, settings.guidance_scale)
        if i in early_steps:
            abar = alphas[int(t)].to(latents.dtype)
            x0 = (latents - (1 - abar).sqrt() * eps) / abar.sqrt()
            early[i] = runner.vae_decoder(x0)
        latents = scheduler_step(batch, i, eps, latents, settings.eta)
    return runner.vae_decoder(latents), early


def single_shot(runner, judge, products: list[Product], seeds: int, settings: GenerationSettings,
                fractions: tuple[float, ...] = (), max_attempts: int = 5, desc: str = "single shot") -> list[dict]:
    """One attempt of ``seeds`` candidates per product; per candidate: oracle label, p(Available) of the
    final image and, at each fraction of the steps, of the decoded x0-prediction; images kept (uint8)."""
    early_steps = {fraction: max(0, round(fraction * settings.steps) - 1) for fraction in fractions}
    samples = []
    for index, product in enumerate(tqdm(products, desc=desc, unit="product")):
        prepared = prepare_request(runner, product.canvas, product.prompt)
        state = judge.prepare(product.canvas, product.caption)
        for seed in request_seeds(index, seeds, max_attempts):
            # One candidate per batch, as the loop's attempts of one candidate: the same floats, the same image.
            final, early = _denoise_with_early(runner, prepared, [seed], settings, sorted(set(early_steps.values())))
            image = paste_back(to_uint8(final), product.canvas)
            p_early = {str(fraction): float(judge(paste_back(to_uint8(early[step]), product.canvas), state)[0, 0])
                       for fraction, step in early_steps.items()}
            samples.append({"product": product.id, "index": index, "seed": seed, "image": image[0],
                            "oracle": product.oracle(image[0]), "fidelity": product.fidelity(image[0]),
                            "p_available": float(judge(image, state)[0, 0]),
                            "p_available_early": p_early})
    return samples


def recurrent(runner, judge, products: list[Product], seeds: int, settings: GenerationSettings,
              max_attempts: int, desc: str = "recurrent") -> list[dict]:
    """Recurrent Generation per product and request: attempts used, RFNet's verdict and the oracle's label
    of the returned image (and of the first attempt's, the single-shot baseline of the same seeds)."""
    samples = []
    for index, product in enumerate(tqdm(products, desc=desc, unit="product")):
        prepared = prepare_request(runner, product.canvas, product.prompt)
        for seed in request_seeds(index, seeds, max_attempts):
            request = GenerationSettings(steps=settings.steps, guidance_scale=settings.guidance_scale,
                                         controlnet_scale=settings.controlnet_scale, seed=seed, num_images=1,
                                         candidates=1, max_attempts=max_attempts, threshold=settings.threshold)
            result = generate(runner, product.canvas, product.prompt, request, caption=product.caption, judge=judge,
                              prepared=prepared)
            returned, first = result.images[0], result.candidates[0]
            samples.append({"product": product.id, "seed": seed, "attempts": result.attempts,
                            "judged_available": bool(returned.available),
                            "oracle_returned": product.oracle(returned.image),
                            "oracle_first": product.oracle(first.image)})
    return samples
