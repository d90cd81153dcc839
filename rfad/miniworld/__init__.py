"""The miniature world as shipped with the package: where its generator and judge live, and what they were trained as.

``model_dir()`` is a model set folder like the tiny zoo's (``rfad-models.json``; an SD-1.5-style
diffusers folder ``sd15/`` with a 4-channel UNet, VAE, tiny CLIP and tokenizer; ``controlnet/``,
the canny ControlNet), trained on this machine's CPU by ``rfad-train miniworld`` on drawn 128 px
ad scenes (docs/miniworld.md). Every command that takes ``--models DIR`` loads it; it draws on
the miniature world's canvas (128 px, product at half the side, centred:
:data:`rfad.miniworld.canvas.MINIWORLD_CANVAS`). ``training_record.json`` inside it holds the
command, settings, seed, losses, times and the SHA-256 of every file.

``world_dir()`` is the miniature world's full model set: that generator (``../model``), the judge
trained on RF-mini (``rfnet/``, with the depth and saliency models its maps came from) and the
canvas the generator was trained on, declared in its ``rfad-models.json`` so that export and
serving place products as training did. ``rfad demo`` serves it; its ``training_record.json``
says how the judge was made and what it scored (``rfad-train ship-judge`` wrote it; docs/method.md).

The world's parts that every stage shares live beside them: its canvas (:mod:`rfad.miniworld.canvas`)
and its annotator, the oracle (:mod:`rfad.miniworld.oracle`), which labels RF-mini, checks the
generator and gives the demo's true labels. This module is torch-free (hashlib and json only), so
``rfad`` can locate the weights without the model stack.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

RECORD_FILE = "training_record.json"
_FOLDER = Path(__file__).resolve().parent / "model"
_WORLD = Path(__file__).resolve().parent / "judge"


def model_dir() -> Path:
    """The shipped generator's model set folder; FileNotFoundError if the install lacks it."""
    if not (_FOLDER / "rfad-models.json").is_file():
        raise FileNotFoundError(f"the miniature world's generator is missing from this install: {_FOLDER} has no "
                                "rfad-models.json (reinstall rfad, or train one with `rfad-train miniworld --out DIR`)")
    return _FOLDER


def world_dir() -> Path:
    """The miniature world's full model set (generator, RF-mini judge, canvas); FileNotFoundError if
    the install lacks it."""
    model_dir()
    if not (_WORLD / "rfad-models.json").is_file():
        raise FileNotFoundError(f"the miniature world's judge is missing from this install: {_WORLD} has no "
                                "rfad-models.json (reinstall rfad, or ship a trained RFNet with `rfad-train ship-judge`)")
    return _WORLD


def training_record(folder: str | os.PathLike | None = None) -> dict:
    """The training record of ``folder`` (default: the shipped generator's)."""
    path = Path(folder if folder is not None else model_dir()) / RECORD_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(folder: str | os.PathLike) -> dict[str, dict]:
    """``{relative path: {"sha256", "bytes"}}`` of every file under ``folder`` except the training record, sorted."""
    root = Path(folder)
    return {path.relative_to(root).as_posix(): {"sha256": file_sha256(path), "bytes": path.stat().st_size}
            for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != RECORD_FILE)}
