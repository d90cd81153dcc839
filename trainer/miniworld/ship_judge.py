"""``rfad-train ship-judge``: a trained RFNet into the miniature world's full model set, beside the generator.

``out`` (in a checkout: ``rfad/miniworld/judge/``, the folder :func:`rfad.miniworld.world_dir`
finds) becomes the world's model set:

- ``rfnet/``: the RFNet (weights, config, tokenizer, train_log.json; no optimiser checkpoints);
- ``dpt/``, ``u2net/``: the depth and saliency models its training maps were computed with: the
  judge was trained on their maps, so it is served with them;
- ``rfad-models.json``: the shipped generator's folders (:func:`rfad.miniworld.model_dir`), these
  three, and the canvas the generator was trained on (:data:`rfad.miniworld.canvas.MINIWORLD_CANVAS`),
  which export carries to the served pipeline;
- ``training_record.json``: the command, the RFNet's training config, its test-split metrics
  (``rfad-train eval-rfnet --json``) and the SHA-256 of every file, as the generator's record
  (``tests/test_miniworld_judge.py`` checks them).

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


def ship_judge(rfnet: Path, depth: Path, saliency: Path, metrics: Path, out: Path, command: list[str],
               made_by: str = "") -> dict:
    """Write the miniature world's model set into ``out`` (replaced) from the RFNet folder ``rfnet``,
    the ``depth``/``saliency`` folders its maps came from and its test-split ``metrics`` file;
    returns ``{"out", "files", "bytes"}``."""
    from rfad.canvas import canvas_to_dict
    from rfad.miniworld import RECORD_FILE, file_hashes, model_dir
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.models.model_set import ModelSet

    scores = json.loads(Path(metrics).read_text())
    missing = [key for key in METRICS if key not in scores]
    if missing:
        raise ValueError(f"--metrics {metrics}: no {', '.join(missing)} (expected `rfad-train eval-rfnet --json` output)")
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
    record = {
        "command": command,
        "made_by": made_by,
        "rfnet_train_config": json.loads(train_log.read_text())["config"],
        "test_split": {key: scores[key] for key in METRICS},
        "canvas": canvas_to_dict(MINIWORLD_CANVAS),
        "maps": f"dpt/ and u2net/ are copies of {depth} and {saliency}, the models the judge's training maps "
                "were computed with",
        "files": file_hashes(out),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return {"out": str(out), "files": len(record["files"]),
            "bytes": sum(f["bytes"] for f in record["files"].values())}
