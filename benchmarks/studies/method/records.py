"""Per-image records: one line per RF-mini image with everything a reported number is computed from.

A record holds the image's id, product, seed, split, prompt (and the class whose scene the prompt
came from), the oracle's label, the rules that fired and their measurements (RF-mini's
labels.jsonl), and every judge's class probabilities under ``probabilities`` (CLASS_NAMES order;
p(Available) first). Records are written as JSONL
beside the results (``benchmarks/results/method_records_<split>.jsonl``), so any table can be
recomputed, by product or paired, without the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from rfad.trainer.api import load_split_rows


def base_records(data: Path, rf_mini: Path, split: str) -> list[dict]:
    """The records of ``split`` (manifest order) without judges: ``data`` the manifest the judges read,
    ``rf_mini`` the RF-mini folder whose labels.jsonl holds seeds and measurements."""
    rows, _ = load_split_rows(data, split, lambda *_: None)
    labels = {}
    with open(rf_mini / "labels.jsonl", encoding="utf-8") as file:
        for line in file:
            entry = json.loads(line)
            labels[entry["id"]] = entry
    records = []
    for row in rows:
        entry = labels[row.id]
        records.append({"id": row.id, "product": row.product, "seed": entry["seed"], "split": split,
                        "prompt": row.prompt, "prompt_from": entry["prompt_from"], "oracle": row.label,
                        "fired": entry["fired"], "measurements": entry["measurements"], "probabilities": {}})
    return records


def add_judge(records: list[dict], judge: str, probabilities: dict[str, list[float]]) -> None:
    """Set ``judge``'s class probabilities on every record (every id must be scored)."""
    missing = [r["id"] for r in records if r["id"] not in probabilities]
    if missing:
        raise ValueError(f"judge {judge!r} has no score for {len(missing)} records (e.g. {missing[0]})")
    for record in records:
        record["probabilities"][judge] = [round(float(v), 6) for v in probabilities[record["id"]]]


def p_available(record: dict, judge: str) -> float:
    return record["probabilities"][judge][0]


def write_records(records: list[dict], path: Path) -> Path:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
    partial.replace(path)
    return path


def read_records(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]
