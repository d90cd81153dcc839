"""Checks that a local model folder is complete before any library tries to load it.

diffusers and transformers treat a string they cannot find on disk as a hub repository id and
try the network, which here means a slow, confusing failure. Every rfad loader therefore
checks the folder first and names exactly what is missing.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

# Hub lookups are never wanted: rfad only loads local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAFETENSORS_WEIGHTS = ("model.safetensors", "diffusion_pytorch_model.safetensors")


class ModelFolderError(FileNotFoundError):
    """A model path is missing, is not the expected kind of folder, or lacks files."""


def _has_weights(folder: Path) -> bool:
    for name in SAFETENSORS_WEIGHTS:
        if (folder / name).is_file() or (folder / f"{name}.index.json").is_file():
            return True
    return False


def check_model_folder(path: str | os.PathLike, kind: str, *, needs_weights: bool = True,
                       extra_files: tuple[str, ...] = ()) -> Path:
    """Return ``path`` as a Path if it is a complete model folder of ``kind``.

    A complete folder has ``config.json``, safetensors weights (single or sharded; ``.bin``
    pickles are not accepted) and ``extra_files``. Raises :class:`ModelFolderError` listing
    every missing item, so one run tells the user everything to fix.
    """
    folder = Path(path)
    if not folder.exists():
        raise ModelFolderError(f"{kind}: {folder} does not exist")
    if not folder.is_dir():
        raise ModelFolderError(f"{kind}: {folder} is a file, expected a model folder")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if needs_weights and not _has_weights(folder):
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (found {', '.join(pickles)}: convert to safetensors, pickles are not loaded)" if pickles else ""
        missing.append(f"weights ({' or '.join(SAFETENSORS_WEIGHTS)}){hint}")
    missing += [name for name in extra_files if not (folder / name).exists()]
    if missing:
        raise ModelFolderError(f"{kind}: {folder} is incomplete; missing: {', '.join(missing)}")
    return folder


def check_tokenizer_folder(path: str | os.PathLike, kind: str) -> Path:
    """A tokenizer folder needs ``tokenizer.json`` or the vocab/merges pair."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(f"{kind}: {folder} does not exist or is not a folder")
    if (folder / "tokenizer.json").is_file():
        return folder
    pairs = [("vocab.json", "merges.txt")]
    if any(all((folder / f).is_file() for f in pair) for pair in pairs):
        return folder
    raise ModelFolderError(f"{kind}: {folder} is incomplete; missing: tokenizer.json (or vocab.json + merges.txt)")


@contextmanager
def loading(kind: str, path: str | os.PathLike):
    """Turn any failure of the library loader inside the block into a :class:`ModelFolderError`
    naming ``kind`` and ``path``: a truncated safetensors file, a config.json that is not JSON or
    does not match the weights. The library's exception stays attached as the cause."""
    try:
        yield
    except ModelFolderError:
        raise
    except Exception as exc:  # noqa: BLE001 - loaders raise OSError, ValueError, RuntimeError, SafetensorError...
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFolderError(f"{kind}: {path} could not be loaded ({type(exc).__name__}: {detail[:300]})") from exc
