"""RFNet trained on RF-mini, its ablations and the baselines, scored against the oracle on the test split.

Every RFNet variant is trained by the product's own trainer (:func:`rfad.trainer.rfnet.train.
train_rfnet`, ``--tiny`` backbones, the paper's schedule: lr x0.1 from the middle epoch) on the
same rows with cached depth and saliency maps, and scored by ``rfad-train eval-rfnet``'s code
(:func:`rfad.trainer.rfnet.evaluate.evaluate_rfnet`). Like the paper's ImageNet-pretrained
backbones, every judge starts from one pretrained on drawn scenes (labels by construction, no
RF-mini image; ``rfad-train rfnet --init``): from scratch, the tiny judge stayed at the majority
baseline on RF-mini's 840 training images. The ablations switch one input or the Feature Filter
Module off during fine-tuning and test (``rfad-train rfnet --ablate``); the baselines are the
majority class and a ResNet that sees the generated image alone (:mod:`resnet_baseline`),
pretrained on the same scenes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

# (name, --ablate values); the first is the judge the loop and RFFT use.
VARIANTS = (
    ("RFNet", ()),
    ("without product image", ("product",)),
    ("without caption", ("caption",)),
    ("without depth", ("depth",)),
    ("without saliency", ("saliency",)),
    ("without Feature Filter", ("filter",)),
)


def _summary(metrics: dict) -> dict:
    """The numbers the table shows, from ``compute_metrics``' dictionary."""
    return {"accuracy": metrics["accuracy"], "majority_baseline": metrics["majority_baseline"],
            "available_ap": metrics["available"]["ap"], "available_f1": metrics["available"]["f1"],
            "per_class_f1": {name: m["f1"] for name, m in metrics["per_class"].items()},
            "support": {name: m["support"] for name, m in metrics["per_class"].items()},
            "confusion": metrics["confusion_matrix"]["counts"], "n": metrics["n"]}


def train_variant(data: Path, out: Path, ablate: tuple[str, ...], epochs: int, image_size: int, batch_size: int,
                  seed: int, init: Path | None = None, product_scale: float | None = None) -> dict:
    """Train one RFNet variant into ``out`` (from ``init``'s weights if given; skipped if its folder is
    complete) and score it on the test split; ``product_scale``: where I_o is placed, in training and
    in the score (None: ``rfad-train rfnet``'s default)."""
    from rfad.trainer.api import TRAIN_LOG, RFNetTrainConfig, evaluate_rfnet, train_rfnet

    timing = out.with_name(out.name + ".seconds")  # beside the folder: a reused model keeps its training time
    if not (out / TRAIN_LOG).is_file():
        start = time.perf_counter()
        placement = {} if product_scale is None else {"product_scale": product_scale}
        train_rfnet(RFNetTrainConfig(data=str(data), out=str(out), tiny=True, epochs=epochs, image_size=image_size,
                                     batch_size=batch_size, seed=seed, ablate=ablate,
                                     init=None if init is None else str(init), **placement), echo=lambda *_: None)
        timing.write_text(f"{time.perf_counter() - start:.1f}\n")
    seconds = float(timing.read_text()) if timing.is_file() else float("nan")
    metrics = evaluate_rfnet(str(out), str(data), "test", echo=lambda *_: None)
    history = json.loads((out / TRAIN_LOG).read_text())["history"]
    return {**_summary(metrics), "ablate": list(ablate), "train_seconds": round(seconds, 1),
            "val_accuracy_last": history[-1].get("val_accuracy"), "model": str(out)}


def resnet_only(data: Path, scenes: Path, pretrain_epochs: int, epochs: int, image_size: int, batch_size: int,
                lr: float, seed: int) -> dict:
    """The ResNet-only baseline: pretrained on ``scenes``, fine-tuned on ``data``, scored like the judges."""
    from rfad.trainer.api import compute_metrics

    from benchmarks.studies.method.resnet_baseline import ImageRows, ResNetOnly, predict_resnet_only, train_resnet_only

    start = time.perf_counter()
    model = train_resnet_only(ResNetOnly(seed), ImageRows(scenes, "train", image_size), pretrain_epochs, batch_size,
                              lr, seed)
    train = ImageRows(data, "train", image_size)
    model = train_resnet_only(model, train, epochs, batch_size, lr, seed)
    probabilities, labels = predict_resnet_only(model, ImageRows(data, "test", image_size))
    metrics = compute_metrics(probabilities, labels, train.labels)
    return {**_summary(metrics), "ablate": ["product", "caption", "depth", "saliency", "filter"],
            "train_seconds": round(time.perf_counter() - start, 1)}


def judge_table(data: Path, scenes: Path, work: Path, pretrained: Path, pretrain_epochs: int, epochs: int,
                image_size: int, batch_size: int, lr: float, seed: int, variants=VARIANTS, echo=print) -> list[dict]:
    """Rows of the judge table: every RFNet variant (fine-tuned from ``pretrained``) and the ResNet-only baseline."""
    rows = []
    for name, ablate in variants:
        echo(f"judge: training {name}")
        rows.append({"judge": name, **train_variant(data, work / ("rfnet-" + ("-".join(ablate) or "full")), ablate,
                                                    epochs, image_size, batch_size, seed, pretrained)})
    echo("judge: training ResNet-only")
    rows.append({"judge": "ResNet only (generated image)",
                 **resnet_only(data, scenes, pretrain_epochs, epochs, image_size, batch_size, lr, seed)})
    return rows
