"""``rfad-train ship-judge``: a trained RFNet into the miniature world's full model set, beside the generator.

``out`` (in a checkout: ``rfad/miniworld/judge/``, the folder :func:`rfad.miniworld.world_dir`
finds) becomes the world's model set:

- ``rfnet/``: the RFNet (weights, config, tokenizer, train_log.json; no optimiser checkpoints);
- ``dpt/``, ``u2net/``: the depth and saliency models its training maps were computed with: the
  judge was trained on their maps, so it is served with them;
- ``rfad-models.json``: the shipped generator's folders (:func:`rfad.miniworld.model_dir`), these
  three, and the canvas the generator was trained on (:data:`rfad.miniworld.canvas.MINIWORLD_CANVAS`),
  which export carries to the served pipeline;
- ``heldout/``: with ``heldout``, the test-split images of the first ``heldout_products`` test
  products of that manifest (sorted by product), their products and a manifest without maps:
  ``tests/test_miniworld_judge.py`` scores the shipped judge on them through ``eval-rfnet``'s code,
  maps computed by the shipped ``dpt/`` and ``u2net/``, and compares with the record, so a change
  anywhere on the judge's path (tokenizer, placement, maps, model) fails a test;
- ``training_record.json``: the command, the RFNet's training config, its test-split metrics
  (``rfad-train eval-rfnet --json``), its metrics on ``heldout/`` and the SHA-256 of every file,
  as the generator's record (``tests/test_miniworld_judge.py`` checks them).

The method study (``benchmarks/studies/method``) trains the judge and runs this as its ``ship`` part.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

RFNET_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "train_log.json")
MAP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
METRICS = ("accuracy", "majority_baseline", "available_ap", "available_f1", "per_class_f1", "support", "confusion", "n")
DESCRIPTION = ("rfad miniature world: the shipped generator (../model), the RF-mini judge and the canvas it was "
               "trained on (rfad-train ship-judge)")


def _copy(source: Path, files: tuple[str, ...], target: Path, what: str) -> None:
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{what} {source}: no config.json (expected a saved model folder)")
    target.mkdir(parents=True)
    for file in files:
        if (source / file).is_file():
            shutil.copy2(source / file, target / file)


HELDOUT = "heldout"


def record_metrics(scores: dict, source: str) -> dict:
    """The record's metrics (:data:`METRICS`) from ``rfad-train eval-rfnet``'s output (its nested
    ``available`` and ``per_class``) or from a record's own flat ``test_split``."""
    if "available" in scores and "per_class" in scores:
        scores = {"accuracy": scores["accuracy"], "majority_baseline": scores["majority_baseline"],
                  "available_ap": scores["available"]["ap"], "available_f1": scores["available"]["f1"],
                  "per_class_f1": {name: row["f1"] for name, row in scores["per_class"].items()},
                  "support": {name: row["support"] for name, row in scores["per_class"].items()},
                  "confusion": scores.get("confusion_matrix"), "n": scores.get("n")}
    missing = [key for key in METRICS if scores.get(key) is None]
    if missing:
        raise ValueError(f"{source}: no {', '.join(missing)} (expected `rfad-train eval-rfnet --json` output)")
    return {key: scores[key] for key in METRICS}


def write_heldout(manifest: Path, out: Path, products: int) -> Path:
    """``out/manifest.jsonl`` (written) of the test-split rows of the first ``products`` test products
    of ``manifest`` (by product file name), with copies of their images under ``out/images`` and
    ``out/products``; the maps are left out (the shipped map models compute them)."""
    from rfad.trainer.data.manifest import ManifestRow, read_manifest, resolve_path, write_manifest

    rows = [row for row in read_manifest(manifest) if row.split == "test"]
    chosen = sorted({row.product for row in rows})[:products]
    if len(chosen) < products:
        raise ValueError(f"--heldout {manifest}: {len(chosen)} test products, {products} wanted")
    kept = []
    for row in (row for row in rows if row.product in chosen):
        files = {}
        for field, folder in (("generated", "images"), ("product", "products")):
            source = resolve_path(manifest.parent, getattr(row, field))
            (out / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / folder / source.name)
            files[field] = f"{folder}/{source.name}"
        kept.append(ManifestRow(id=row.id, prompt=row.prompt, caption=row.caption, label=row.label, split="test",
                                **files))
    return write_manifest(kept, out / "manifest.jsonl")


def heldout_metrics(world: Path) -> dict:
    """The shipped judge's metrics on the world's ``heldout/`` set (maps from its ``dpt/``, ``u2net/``)."""
    from rfad.trainer.rfnet.evaluate import evaluate_rfnet

    scores = evaluate_rfnet(str(world / "rfnet"), str(world / HELDOUT / "manifest.jsonl"), "test",
                            depth=str(world / "dpt"), saliency=str(world / "u2net"), echo=lambda *_: None)
    return record_metrics(scores, f"{world / HELDOUT}")


def ship_judge(rfnet: Path, depth: Path, saliency: Path, metrics: Path, out: Path, command: list[str],
               made_by: str = "", heldout: Path | None = None, heldout_products: int = 10) -> dict:
    """Write the miniature world's model set into ``out`` (replaced) from the RFNet folder ``rfnet``,
    the ``depth``/``saliency`` folders its maps came from, its test-split ``metrics`` file and (with
    ``heldout``, a manifest) a small held-out set; returns ``{"out", "files", "bytes"}``."""
    from rfad.canvas import canvas_to_dict
    from rfad.miniworld import RECORD_FILE, file_hashes, model_dir
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.models.model_set import ModelSet

    test_split = record_metrics(json.loads(Path(metrics).read_text()), f"--metrics {metrics}")
    train_log = Path(rfnet) / "train_log.json"
    if not train_log.is_file():
        raise FileNotFoundError(f"--rfnet {rfnet}: no train_log.json (expected `rfad-train rfnet` output)")
    generator = ModelSet.resolve(model_dir())
    if out.exists():
        shutil.rmtree(out)
    _copy(Path(rfnet), RFNET_FILES, out / "rfnet", "--rfnet")
    _copy(Path(depth), MAP_FILES, out / "dpt", "--depth")
    _copy(Path(saliency), MAP_FILES, out / "u2net", "--saliency")
    ModelSet(sd=generator.sd, controlnet=generator.controlnet, lora_scale=generator.lora_scale,
             depth=out / "dpt", saliency=out / "u2net", rfnet=out / "rfnet", canvas=MINIWORLD_CANVAS).write(
        out, DESCRIPTION)
    if heldout is not None:
        write_heldout(Path(heldout), out / HELDOUT, heldout_products)
    record = {
        "command": command,
        "made_by": made_by,
        "rfnet_train_config": json.loads(train_log.read_text())["config"],
        "test_split": test_split,
        "canvas": canvas_to_dict(MINIWORLD_CANVAS),
        "maps": f"dpt/ and u2net/ are copies of {depth} and {saliency}, the models the judge's training maps "
                "were computed with",
        "heldout": heldout_metrics(out) if heldout is not None else None,
        "files": file_hashes(out),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return {"out": str(out), "files": len(record["files"]),
            "bytes": sum(f["bytes"] for f in record["files"].values())}
