"""The ``ship`` part of benchmarks/method_bench.py: the RF-mini judge into the package, beside the generator.

``rfad/miniworld/judge/`` becomes the miniature world's full model set (``rfad.miniworld.world_dir``):

- ``rfnet/``: the ``rfnet`` part's RFNet (weights, config, tokenizer; no optimiser checkpoints);
- ``dpt/``, ``u2net/``: the tiny zoo's depth and saliency models (random weights, seed 0), the
  ones RF-mini's maps were computed with: the judge was trained on their maps, so it is served
  with them;
- ``rfad-models.json``: the generator's folders (``../model``), these three, and the canvas the
  generator was trained on (``MINIWORLD_CANVAS``), which export carries to the served pipeline;
- ``training_record.json``: the commands, the test-split metrics of the ``rfnet`` part and the
  SHA-256 of every file (as the generator's record; ``tests/test_miniworld_judge.py`` checks them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

RFNET_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "train_log.json")
MAP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
METRICS = ("accuracy", "majority_baseline", "available_ap", "available_f1", "per_class_f1", "support", "confusion", "n")


def ship_judge(work: Path, out: Path, command: list[str]) -> dict:
    """Copy the judge of ``work`` (method_bench's working folder) into ``out``; returns the record."""
    from rfad.canvas import canvas_to_dict
    from rfad.miniworld import RECORD_FILE, file_hashes, model_dir
    from rfad.models.model_set import ModelSet
    from rfad.trainer.data.scenes import MINIWORLD_CANVAS

    rfnet = json.loads((work / "rfnet.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    for name, source, files in (("rfnet", work / "rfnet-full", RFNET_FILES), ("dpt", work / "zoo" / "dpt", MAP_FILES),
                                ("u2net", work / "zoo" / "u2net", MAP_FILES)):
        (out / name).mkdir(parents=True)
        for file in files:
            if (source / file).is_file():
                shutil.copy2(source / file, out / name / file)
    generator = ModelSet.resolve(model_dir())
    ModelSet(sd=generator.sd, controlnet=generator.controlnet, lora_scale=generator.lora_scale,
             depth=out / "dpt", saliency=out / "u2net", rfnet=out / "rfnet", canvas=MINIWORLD_CANVAS).write(
        out, "rfad miniature world: the shipped generator (../model), the RF-mini judge and the canvas it was "
             "trained on (benchmarks/method_bench.py --parts ship)")
    record = {
        "command": command,
        "made_by": "benchmarks/method_bench.py --parts data,pretrain,rfnet (RF-mini, drawn-scene pretraining, "
                   "rfad-train rfnet --tiny --init) then --parts ship",
        "rfnet_train_config": json.loads((work / "rfnet-full" / "train_log.json").read_text())["config"],
        "test_split": {k: rfnet[k] for k in METRICS},
        "canvas": canvas_to_dict(MINIWORLD_CANVAS),
        "maps": "dpt/ and u2net/ are the tiny zoo's (rfad.tiny.zoo, seed 0, random weights): RF-mini's depth and "
                "saliency maps were computed with them",
        "files": file_hashes(out),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return {"out": str(out), "files": len(record["files"]),
            "bytes": sum(f["bytes"] for f in record["files"].values())}
