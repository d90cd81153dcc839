"""The generator's training scenes, drawn once and held in memory as arrays.

Every scene comes from :func:`rfad.trainer.data.scenes.draw_scene` under its own seed
(``[seed, TRAINING_STREAM, index]``), with its class drawn from the training class mix. The
bank holds what the three models read: the scene image (VAE, and through it the UNet), the
control image the canvas makes of the product (ControlNet) and the prompt (text encoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from rfad.trainer.data.scenes import SIDE, TRAINING_STREAM, draw_scene, mixed_labels


@dataclass(frozen=True, eq=False)
class SceneBank:
    """``n`` scenes. images: uint8 [n, 128, 128, 3]; controls: uint8 [n, 128, 128], the canvas's Canny edges of the
    product (one channel of ``AdCanvas.control_image``); prompts and labels: n strings each."""

    images: np.ndarray
    controls: np.ndarray
    prompts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.prompts)

    def label_counts(self) -> dict[str, int]:
        return {name: self.labels.count(name) for name in dict.fromkeys(sorted(self.labels))}


def draw_scene_bank(n: int, mix: dict[str, float], seed: int = 0, progress: bool = False) -> SceneBank:
    """Draw ``n`` training scenes whose classes follow ``mix`` (see :func:`mixed_labels`)."""
    if n < 1:
        raise ValueError(f"scenes: must be at least 1, got {n}")
    labels = mixed_labels(n, mix, np.random.default_rng([seed, TRAINING_STREAM]))
    images = np.empty((n, SIDE, SIDE, 3), np.uint8)
    controls = np.empty((n, SIDE, SIDE), np.uint8)
    prompts = []
    for index in tqdm(range(n), desc="drawing scenes", unit="scene", disable=not progress):
        scene = draw_scene(labels[index], np.random.default_rng([seed, TRAINING_STREAM, index]))
        images[index] = scene.image
        controls[index] = scene.canvas.control_image[..., 0]
        prompts.append(scene.prompt)
    return SceneBank(images=images, controls=controls, prompts=prompts, labels=labels)
