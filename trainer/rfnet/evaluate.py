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

from rfad.contract import CLASS_NAMES
from rfad.trainer.rfnet.dataset import RFNetDataset
from rfad.trainer.rfnet.train import load_split_rows, predict


def average_precision(scores: list[float], positives: list[bool]) -> float:
    """AP = sum over positives of precision at that positive's rank / number of positives (ties: stable order)."""
    ranked = sorted(zip(scores, positives), key=lambda pair: -pair[0])
    total = sum(positives)
    if total == 0:
        return float("nan")
    hits, precision_sum = 0, 0.0
    for rank, (_, positive) in enumerate(ranked, start=1):
        if positive:
            hits += 1
            precision_sum += hits / rank
    return precision_sum / total


def binary_metrics(predicted: list[bool], actual: list[bool]) -> dict[str, float]:
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def compute_metrics(probabilities: torch.Tensor, labels: torch.Tensor, train_labels: list[int],
                    threshold: float = 0.5) -> dict:
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
        "accuracy": float((predicted == labels).float().mean()),
        "majority_baseline": float((labels == majority).float().mean()),
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
        f"F1 {a['f1']:.3f}  AP {a['ap']:.3f}",
        "",
        f"{'class':<22}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<22}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>9}")
    lines += ["", "confusion (rows true, columns predicted): " + ", ".join(n.split()[0] for n in CLASS_NAMES)]
    lines += ["  " + " ".join(f"{v:>5}" for v in row) for row in metrics["confusion_matrix"]["counts"]]
    return "\n".join(lines)


def evaluate_rfnet(model_dir: str, data: str, split: str = "test", depth: str | None = None,
                   saliency: str | None = None, batch_size: int = 32, echo=print) -> dict:
    """Metrics of the RFNet folder ``model_dir`` on ``split`` of ``data``.

    Maps missing from the manifest are computed by ``--depth/--saliency`` models; for a model
    trained with ``--tiny`` (train_log.json says so) the same seeded tiny map models are used.
    """
    from transformers import AutoTokenizer

    from rfad.models.rfnet import RFNet
    from rfad.trainer.rfnet.train import RFNetTrainConfig, build_map_models

    model = RFNet.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    log_file = Path(model_dir) / "train_log.json"
    trained = json.loads(log_file.read_text())["config"] if log_file.is_file() else {}
    maps = build_map_models(RFNetTrainConfig(data=data, out=model_dir, tiny=bool(trained.get("tiny")),
                                             seed=int(trained.get("seed", 0)), depth=depth, saliency=saliency))
    rows, root = load_split_rows(data, split, echo)
    if not rows:
        raise ValueError(f"--data {data}: no usable labelled rows with split {split!r}")
    train_rows, _ = load_split_rows(data, "train", lambda *_: None)
    dataset = RFNetDataset(rows, root, tokenizer, model.config.image_size, model.config.max_caption_tokens, maps)
    probabilities, labels = predict(model, torch.utils.data.DataLoader(dataset, batch_size=batch_size), "cpu")
    metrics = compute_metrics(probabilities, labels, [CLASS_NAMES.index(r.label) for r in train_rows])
    metrics["split"] = split
    metrics["model"] = str(model_dir)
    return metrics
