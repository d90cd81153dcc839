"""The judges of the method's table: RFNet, its ablations and the baselines, each trained over several seeds.

Every RFNet variant is trained by the product's own trainer (:func:`rfad.trainer.api.train_rfnet`,
``--tiny --backbone``, the paper's schedule: lr x0.1 from the middle epoch) and scored by
``rfad-train eval-rfnet``'s code with every image's probabilities kept, so tables, intervals and
paired comparisons come from per-image records. Like the paper's ImageNet-pretrained backbones,
every judge but "no pretraining" starts from one RFNet pretrained on scenes the generator's VAE
decoded and the oracle labelled (``rfad-data scenes --through-vae``, no RF-mini image). The
ablations switch one input or the Feature Filter Module off during fine-tuning and scoring
(``--ablate``); the ResNet-only baseline is RFNet's own backbone shape with a classification head
that sees the generated image alone (:mod:`benchmarks.studies.method.resnet_baseline`), pretrained on
the same scenes: equal backbone capacity.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rfad.trainer.api import TRAIN_LOG, RFNetTrainConfig, evaluate_rfnet, latest_checkpoint, train_rfnet


@dataclass(frozen=True)
class Recipe:
    """How every judge of one study is trained (chosen on validation products)."""

    backbone: str = "mini"
    image_size: int = 128
    product_scale: float = 0.5       # the miniature world's canvas
    pretrain_epochs: int = 8
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3


# (name, --ablate values, pretrained?); the first is the judge the loop, RFFT and the demo use.
VARIANTS = (
    ("RFNet", (), True),
    ("without product image", ("product",), True),
    ("without caption", ("caption",), True),
    ("without depth", ("depth",), True),
    ("without saliency", ("saliency",), True),
    ("without Feature Filter", ("filter",), True),
    ("RFNet, no pretraining", (), False),
)
RESNET_ONLY = "ResNet only (generated image)"


def variant_folder(work: Path, name: str, seed: int, fraction: float = 1.0) -> Path:
    slug = name.lower().replace(",", "").replace(" ", "-").replace("(", "").replace(")", "")
    return work / "judges" / (f"{slug}-s{seed}" if fraction == 1.0 else f"{slug}-f{fraction:g}-s{seed}")


def _train_seconds(out: Path, this_call: float) -> float:
    """The run's training seconds: the trainer's total over every call (a resumed run's earlier calls
    included), else this call's."""
    return json.loads((out / TRAIN_LOG).read_text()).get("train_seconds", this_call)


def _interrupted(out: Path) -> bool:
    """Whether ``out`` holds an unfinished run's checkpoints: the bench was stopped while training it,
    and the same command resumes it from the latest (rather than being refused, or starting over)."""
    return latest_checkpoint(out) is not None


def pretrain(scenes: Path, out: Path, recipe: Recipe, depth: Path, saliency: Path, seed: int = 0) -> dict:
    """RFNet on the VAE-decoded scenes (labels by the oracle); skipped when ``out`` is complete.

    ``depth``, ``saliency``: the map models RF-mini's maps come from, so that the maps the judge
    learns to read in pretraining are those it reads in fine-tuning and in serving (without them
    ``--tiny`` would compute the scenes' maps with the tiny zoo's random-weight models, other
    maps than RF-mini's)."""
    timing = out.with_name(out.name + ".seconds")
    if not (out / TRAIN_LOG).is_file():
        start = time.perf_counter()
        train_rfnet(RFNetTrainConfig(data=str(scenes), out=str(out), tiny=True, backbone=recipe.backbone,
                                     epochs=recipe.pretrain_epochs, image_size=recipe.image_size, lr=recipe.lr,
                                     batch_size=recipe.batch_size, product_scale=recipe.product_scale, seed=seed,
                                     depth=str(depth), saliency=str(saliency), resume=_interrupted(out)),
                    echo=lambda *_: None)
        timing.write_text(f"{_train_seconds(out, time.perf_counter() - start):.1f}\n")
    history = json.loads((out / TRAIN_LOG).read_text())["history"]
    return {"model": str(out), "history": history,
            "seconds": float(timing.read_text()) if timing.is_file() else float("nan")}


def train_judge(data: Path, out: Path, ablate: tuple[str, ...], recipe: Recipe, seed: int,
                init: Path | None, rows_fraction: float = 1.0) -> float:
    """Train one RFNet into ``out`` unless it is complete; returns its training seconds (kept beside it)."""
    timing = out.with_name(out.name + ".seconds")
    if not (out / TRAIN_LOG).is_file():
        start = time.perf_counter()
        train_rfnet(RFNetTrainConfig(data=str(data), out=str(out), tiny=True, backbone=recipe.backbone,
                                     epochs=recipe.epochs, image_size=recipe.image_size, lr=recipe.lr,
                                     batch_size=recipe.batch_size, product_scale=recipe.product_scale, seed=seed,
                                     ablate=ablate, init=None if init is None else str(init),
                                     train_fraction=rows_fraction, resume=_interrupted(out)),
                    echo=lambda *_: None)
        timing.write_text(f"{_train_seconds(out, time.perf_counter() - start):.1f}\n")
    return float(timing.read_text()) if timing.is_file() else float("nan")


def score(model: Path, data: Path, split: str) -> dict[str, list[float]]:
    """Row id -> class probabilities (CLASS_NAMES order) of the RFNet folder ``model`` on ``split``."""
    metrics = evaluate_rfnet(str(model), str(data), split, per_image=True, echo=lambda *_: None)
    return {row["id"]: row["probabilities"] for row in metrics["per_image"]}
