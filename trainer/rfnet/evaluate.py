"""``rfad-train eval-rfnet``: the judge's metrics on a held-out split.

Available-vs-not is the decision the serving loop makes, so precision, recall, F1 and AP are
computed for "Available" as the positive class with score p(Available), as the paper reports
them; accuracy, the majority-class baseline, per-class metrics and the confusion matrix cover
the five classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rfad.contract import CLASS_NAMES, DEFAULTS
from rfad.trainer.rfnet.dataset import RFNetDataset
from rfad.trainer.rfnet.train import load_split_rows, predict


def average_precision(scores: list[float], positives: list[bool]) -> float | None:
    """Exact AP: sum over distinct score thresholds (high to low) of (R_k - R_{k-1}) * P_k.

    The definition scikit-learn's ``average_precision_score`` uses; without ties it is the
    mean, over the positives, of the precision at each positive's rank. Samples with equal
    scores enter together, so the result does not depend on their order. None without positives.
    """
    total = sum(bool(p) for p in positives)
    if total == 0:
        return None
    ranked = sorted(zip(scores, positives), key=lambda pair: -pair[0])
    ap, hits, seen, previous_recall, i = 0.0, 0, 0, 0.0, 0
    while i < len(ranked):
        threshold = ranked[i][0]
        while i < len(ranked) and ranked[i][0] == threshold:
            hits += bool(ranked[i][1])
            seen += 1
            i += 1
        recall = hits / total
        ap += (recall - previous_recall) * (hits / seen)
        previous_recall = recall
    return ap


def binary_metrics(predicted: list[bool], actual: list[bool]) -> dict[str, float]:
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def compute_metrics(probabilities: torch.Tensor, labels: torch.Tensor, train_labels: list[int],
                    threshold: float = DEFAULTS.threshold) -> dict:
    """probabilities [N, 5], labels [N] (class indices) -> the metrics dictionary (fractions)."""
    predicted = probabilities.argmax(-1)
    p_available = probabilities[:, 0].tolist()
    actual_available = (labels == 0).tolist()
    majority = max(range(len(CLASS_NAMES)), key=lambda c: train_labels.count(c)) if train_labels else 0
    confusion = torch.zeros(len(CLASS_NAMES), len(CLASS_NAMES), dtype=torch.long)
    for truth, guess in zip(labels.tolist(), predicted.tolist()):
        confusion[truth, guess] += 1
    per_class = {}
    for c, name in enumerate(CLASS_NAMES):
        scores = binary_metrics((predicted == c).tolist(), (labels == c).tolist())
        per_class[name] = {**scores, "support": int((labels == c).sum())}
    return {
        "n": int(labels.numel()),
        "accuracy": int((predicted == labels).sum()) / max(1, labels.numel()),
        "majority_baseline": int((labels == majority).sum()) / max(1, labels.numel()),
        "majority_class": CLASS_NAMES[majority],
        "available": {**binary_metrics([p >= threshold for p in p_available], actual_available),
                      "ap": average_precision(p_available, actual_available), "threshold": threshold},
        "per_class": per_class,
        "confusion_matrix": {"rows_true_cols_predicted": list(CLASS_NAMES), "counts": confusion.tolist()},
    }


def format_metrics(metrics: dict) -> str:
    a = metrics["available"]
    lines = [
        f"samples {metrics['n']}   accuracy {metrics['accuracy']:.3f}   majority baseline "
        f"{metrics['majority_baseline']:.3f} ({metrics['majority_class']})",
        f"Available vs not (p >= {a['threshold']}): precision {a['precision']:.3f}  recall {a['recall']:.3f}  "
        f"F1 {a['f1']:.3f}  AP " + (f"{a['ap']:.3f}" if a["ap"] is not None else "n/a (no Available samples)"),
        "",
        f"{'class':<22}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<22}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>9}")
    lines += ["", "confusion (rows true, columns predicted): " + ", ".join(n.split()[0] for n in CLASS_NAMES)]
    lines += ["  " + " ".join(f"{v:>5}" for v in row) for row in metrics["confusion_matrix"]["counts"]]
    return "\n".join(lines)


def evaluate_rfnet(model_dir: str, data: str, split: str = "test", depth: str | None = None,
                   saliency: str | None = None, batch_size: int = 32, threshold: float = DEFAULTS.threshold,
                   product_scale: float | None = None, per_image: bool = False, echo=print) -> dict:
    """Metrics of the RFNet folder ``model_dir`` on ``split`` of ``data`` (see :func:`compute_metrics`).

    ``per_image``: also ``metrics["per_image"]``, one ``{"id", "label", "probabilities"}`` per row in
    manifest order (probabilities over CLASS_NAMES), for analyses the summary cannot give (by
    product, paired with another judge).

    Maps missing from the manifest are computed by the ``depth``/``saliency`` models; for a model
    trained with ``--tiny`` (its train_log.json says so) the same seeded tiny map models are used.
    ``product_scale``: where the product image is placed (None: the scale the model was trained
    at, from its train_log.json; a model without one is refused, and a log written before the scale
    was recorded means the default, the only scale there was); the metrics record it and whence.
    """
    from transformers import AutoTokenizer

    from rfad.models.folders import check_tokenizer_folder
    from rfad.models.rfnet import RFNet
    from rfad.trainer.rfnet.train import TRAIN_LOG, RFNetTrainConfig, build_map_models

    model = RFNet.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(check_tokenizer_folder(model_dir, "RFNet caption tokenizer"),
                                              local_files_only=True)
    log_file = Path(model_dir) / TRAIN_LOG
    trained = json.loads(log_file.read_text())["config"] if log_file.is_file() else {}
    # The model's own facts first: a missing scale is refused before any data or map model is read.
    if product_scale is not None:
        scale_from = "--product-scale"
    elif not log_file.is_file():
        raise ValueError(f"--model {model_dir}: no {TRAIN_LOG} to read the product scale it was trained at; pass "
                         "--product-scale (the served canvas's)")
    elif "product_scale" in trained:
        product_scale, scale_from = float(trained["product_scale"]), TRAIN_LOG
    else:
        product_scale, scale_from = DEFAULTS.product_scale, f"the default ({TRAIN_LOG} predates --product-scale)"
    maps = build_map_models(RFNetTrainConfig(data=data, out=model_dir, tiny=bool(trained.get("tiny")),
                                             seed=int(trained.get("seed", 0)), depth=depth, saliency=saliency))
    rows, root = load_split_rows(data, split, echo)
    if not rows:
        raise ValueError(f"--data {data}: no usable labelled rows with split {split!r}")
    if maps is None and any(row.depth is None or row.saliency is None for row in rows):
        raise ValueError(f"--data {data}: some {split} rows have no cached depth/saliency maps; run `rfad-data "
                         "prepare` first, or pass --depth DPT_DIR and --saliency U2NET")
    train_rows, _ = load_split_rows(data, "train", lambda *_: None)
    dataset = RFNetDataset(rows, root, tokenizer, model.config.image_size, model.config.max_caption_tokens, maps,
                           product_scale)
    probabilities, labels = predict(model, dataset, batch_size, "cpu")
    metrics = compute_metrics(probabilities, labels, [CLASS_NAMES.index(r.label) for r in train_rows], threshold)
    metrics["split"] = split
    metrics["model"] = str(model_dir)
    metrics["product_scale"] = product_scale
    metrics["product_scale_from"] = scale_from
    if per_image:
        metrics["per_image"] = [{"id": row.id, "label": row.label, "probabilities": [round(float(v), 6) for v in p]}
                                for row, p in zip(rows, probabilities.tolist())]
    return metrics
