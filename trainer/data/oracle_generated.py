"""The oracle where it is used: on generated-looking scenes whose truth is known by construction.

RF-mini's images come out of the miniature world's generator, not out of the drawing code. The
oracle's rules were tuned on drawn scenes, so its agreement there (docs/miniworld.md) says
little about RF-mini. Here a drawn scene (label known) is passed through the generator's own
machinery and then labelled; two constructions:

- ``vae``: the scene encoded and decoded by the generator's VAE, the product pasted back (what
  every generated image goes through last: the decoder's blur, colour shifts and lost detail);
- ``repainted``: the scene re-noised to ``strength`` of the DDIM schedule and denoised by the
  generator (UNet + ControlNet, the scene's own prompt, classifier-free guidance) from there, as
  img2img inpainting: the layout is the drawing's, the texture the generator's.

Each construction is measured on two disjoint sets of scenes: ``val`` (the oracle's rules may be
changed while looking at it) and ``report`` (read once a rule change is final, for the numbers
the docs state). Scenes come from the check stream of :mod:`rfad.trainer.data.scenes`, which the
generator never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rfad.canvas import paste_back
from rfad.contract import CLASS_NAMES
from rfad.miniworld.oracle import label_ad
from rfad.trainer.data.oracle_check import Agreement
from rfad.trainer.data.scenes import CHECK_STREAM, Scene, draw_scene

CONSTRUCTIONS = {
    "vae": "drawn scenes encoded and decoded by the generator's VAE, the product pasted back",
    "repainted": "drawn scenes re-noised to the given strength and denoised by the generator (UNet + ControlNet, "
                 "the scene's prompt, CFG 7.5, DDIM 20 steps), the product pasted back",
}
# Scene sets: val may steer the oracle's rules, report is read for the stated numbers.
SET_SEEDS = {"val": 2601, "report": 2602}
REPAINT_STEPS, REPAINT_GUIDANCE = 20, 7.5


@dataclass(frozen=True)
class Construction:
    """How a drawn scene is made generated-looking: ``kind`` in CONSTRUCTIONS, ``strength`` for repainting."""

    kind: str
    strength: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CONSTRUCTIONS:
            raise ValueError(f"construction: unknown {self.kind!r}; expected one of {', '.join(CONSTRUCTIONS)}")
        if self.kind == "repainted" and not 0 < self.strength < 1:
            raise ValueError(f"strength: must be in (0, 1) for repainted scenes, got {self.strength}")

    @property
    def name(self) -> str:
        return self.kind if self.kind == "vae" else f"repainted {self.strength:g}"


def check_scenes(label: str, n: int, scene_set: str) -> list[Scene]:
    """``n`` drawn scenes of ``label`` from ``scene_set`` ("val" or "report"); each depends only on its index."""
    if scene_set not in SET_SEEDS:
        raise ValueError(f"scene set: unknown {scene_set!r}; expected one of {', '.join(SET_SEEDS)}")
    c = CLASS_NAMES.index(label)
    return [draw_scene(label, np.random.default_rng([SET_SEEDS[scene_set], CHECK_STREAM, c, j])) for j in range(n)]


@torch.no_grad()
def vae_round_trip(runner, images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the generator's VAE reconstruction (latent means) uint8 [N, H, W, 3]."""
    # The runner's encoder returns scaled latents and its decoder takes them: the round trip is exact.
    from rfad.pipeline.denoise import to_uint8

    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    mean, _ = runner.vae_encoder(pixels.to(runner.device, runner.dtype))
    return to_uint8(runner.vae_decoder(mean))


@torch.no_grad()
def repaint(runner, scene: Scene, strength: float, seed: int) -> np.ndarray:
    """``scene`` re-noised to ``strength`` and denoised by the generator -> uint8 [H, W, 3] (product not yet pasted).

    The loop's own pieces (:mod:`rfad.pipeline.denoise`): the scene's latents take the place of the
    init image's, so the product region stays on the scene's trajectory and the background starts
    from the scene noised to step ``(1 - strength) * T``.
    """
    from rfad.pipeline.denoise import combine_guidance, guided_noise, scheduler_step, start_denoising, to_uint8
    from rfad.pipeline.request import prepare_request
    from rfad.pipeline.settings import GenerationSettings

    settings = GenerationSettings(steps=REPAINT_STEPS, guidance_scale=REPAINT_GUIDANCE, seed=seed)
    prepared = prepare_request(runner, scene.canvas, scene.prompt)
    batch = start_denoising(runner, prepared, [seed], settings)
    pixels = torch.from_numpy(np.ascontiguousarray(scene.image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    batch.image_latents, _ = runner.vae_encoder(pixels.to(runner.device, runner.dtype))  # scaled latent means
    first = int(round((1 - strength) * len(batch.timesteps)))
    latents = batch.scheduler.add_noise(batch.image_latents, batch.noise, batch.timesteps[first:first + 1])
    for i in range(first, len(batch.timesteps)):
        uncond, cond = guided_noise(runner, batch, latents, batch.timesteps[i], settings.controlnet_scale)
        latents = scheduler_step(batch, i, combine_guidance(uncond, cond, settings.guidance_scale), latents)
    return to_uint8(runner.vae_decoder(latents))[0]


def generated_looking(runner, scenes: list[Scene], construction: Construction, seed: int = 0) -> list[np.ndarray]:
    """Each scene made generated-looking by ``construction``, the product pasted back: uint8 [H, W, 3] each."""
    if construction.kind == "vae":
        images = vae_round_trip(runner, np.stack([scene.image for scene in scenes]))
    else:
        images = [repaint(runner, scene, construction.strength, seed + j) for j, scene in enumerate(scenes)]
    return [paste_back(image, scene.canvas) for image, scene in zip(images, scenes)]


def measure_generated_agreement(runner, construction: Construction, n_per_class: int, scene_set: str,
                                keep_misses: int = 5, progress=None) -> Agreement:
    """The oracle on ``n_per_class`` generated-looking scenes of every class from ``scene_set``.

    ``progress(done, total)`` is called after each class. The Agreement's ``source`` names the
    construction and the set (e.g. "repainted 0.3, report").
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class: must be at least 1, got {n_per_class}")
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), np.int64)
    variants: dict[str, list[int]] = {}
    misses = []
    for c, label in enumerate(CLASS_NAMES):
        scenes = check_scenes(label, n_per_class, scene_set)
        images = generated_looking(runner, scenes, construction, seed=SET_SEEDS[scene_set] * 100_000 + c * 10_000)
        for j, (scene, image) in enumerate(zip(scenes, images)):
            verdict = label_ad(image, np.asarray(scene.canvas.product_rgba), scene.canvas.product_alpha)
            confusion[c, CLASS_NAMES.index(verdict.label)] += 1
            key = f"{label} / {scene.params['variant']}"
            counts = variants.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += verdict.label == label
            if verdict.label != label and len(misses) < keep_misses:
                misses.append({"label": label, "variant": scene.params["variant"], "index": j,
                               "oracle": verdict.label, "explanation": verdict.explain()})
        if progress is not None:
            progress(c + 1, len(CLASS_NAMES))
    return Agreement(f"{construction.name}, {scene_set}", n_per_class, SET_SEEDS[scene_set], confusion,
                     dict(sorted(variants.items())), misses, description=CONSTRUCTIONS[construction.kind])
