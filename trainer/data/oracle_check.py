"""How often the oracle agrees with labels known by construction: the miniature-world scenes and the synthetic set.

Both sources are drawn in memory (no files), ``n_per_class`` samples per class, each from its
own generator ``[seed, class index, sample index]``, so a sample does not depend on ``n``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from rfad.canvas import paste_back
from rfad.contract import CLASS_NAMES
from rfad.miniworld.oracle import OracleVerdict, label_ad
from rfad.trainer.data.scenes import draw_scene
from rfad.trainer.data.synth import draw_placed_sample

ORACLE_CHECK_SOURCES = {
    "scenes": "miniature-world scenes (`rfad.trainer.data.scenes`, 128 px, product placed by the canvas)",
    "scenes, blurred": "the same scenes with the background blurred (Gaussian, sigma 1 px) and noised (sigma 4 "
                       "per channel) before the product is pasted back: roughly what a tiny VAE decoder does",
    "synth": "the synthetic set (`rfad-data synth`, product size and position vary)",
}
BLUR_SIGMA, NOISE_SIGMA = 1.0, 4.0


@dataclass
class Agreement:
    """The oracle against the constructed labels of one source."""

    source: str
    n_per_class: int
    seed: int
    confusion: np.ndarray                      # int64 [5, 5]: rows constructed label, columns oracle label
    variants: dict = field(default_factory=dict)  # "label / variant" -> [samples, agreed] (scenes only)
    misses: list = field(default_factory=list)    # a few disagreements, each with the oracle's explanation
    description: str | None = None                # what the source is; default: ORACLE_CHECK_SOURCES[source]

    def per_class(self) -> dict[str, float]:
        """Fraction of each constructed class that the oracle labels the same."""
        return {name: float(self.confusion[i, i] / max(1, self.confusion[i].sum())) for i, name in enumerate(CLASS_NAMES)}

    def to_dict(self) -> dict:
        return {"source": self.source, "description": self.description or ORACLE_CHECK_SOURCES[self.source],
                "n_per_class": self.n_per_class,
                "seed": self.seed, "classes": list(CLASS_NAMES), "confusion": self.confusion.tolist(),
                "per_class": self.per_class(), "variants": self.variants, "misses": self.misses}


def judge_sample(source: str, label: str, rng: np.random.Generator, size: int = 128) -> tuple[OracleVerdict, str | None]:
    """Draw one sample of ``label`` from ``source`` and label it: (verdict, the scene's variant or None)."""
    if source in ("scenes", "scenes, blurred"):
        scene = draw_scene(label, rng)
        image = scene.image
        if source == "scenes, blurred":
            noisy = cv2.GaussianBlur(image.astype(np.float32), (0, 0), BLUR_SIGMA) + rng.normal(0, NOISE_SIGMA, image.shape)
            image = paste_back(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), scene.canvas)
        return label_ad(image, scene.canvas.product_rgba, scene.canvas.product_alpha), scene.params["variant"]
    if source == "synth":
        product, ad, _, _, placement = draw_placed_sample(label, rng, size)
        return label_ad(np.asarray(ad), np.asarray(product), placement), None
    raise ValueError(f"source: unknown {source!r}; expected one of {', '.join(ORACLE_CHECK_SOURCES)}")


def measure_agreement(source: str, n_per_class: int, seed: int = 0, size: int = 128, keep_misses: int = 5) -> Agreement:
    """Label ``n_per_class`` samples of every class from ``source``; ``size`` is the synthetic set's side."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class: must be at least 1, got {n_per_class}")
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), np.int64)
    totals, agreed, misses = Counter(), Counter(), []
    for c, label in enumerate(CLASS_NAMES):
        for j in range(n_per_class):
            verdict, variant = judge_sample(source, label, np.random.default_rng([seed, c, j]), size)
            confusion[c, CLASS_NAMES.index(verdict.label)] += 1
            if variant is not None:
                totals[f"{label} / {variant}"] += 1
                agreed[f"{label} / {variant}"] += verdict.label == label
            if verdict.label != label and len(misses) < keep_misses:
                misses.append({"label": label, "variant": variant, "index": j, "oracle": verdict.label,
                               "explanation": verdict.explain()})
    variants = {key: [totals[key], agreed[key]] for key in sorted(totals)}
    return Agreement(source, n_per_class, seed, confusion, variants, misses)
