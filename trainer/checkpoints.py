"""Training checkpoints shared by ``rfad-train rfnet`` and ``rfad-train rfft``: atomic, verified, pickle-free.

A checkpoint is a folder ``OUT/checkpoints/step-00000012/`` holding ``accelerator.save_state``
(trainable weights in safetensors; optimizer, GradScaler and every process's RNG states as
``torch.save`` files of tensors, numbers and numpy arrays, read back with ``weights_only=True``)
plus ``state.json``: the trainer's own state (epoch, step, history, ...) and the SHA-256 of every
file beside it.

- Atomic: the folder is written under a temporary name and renamed into place, so a run killed
  at any moment leaves the previous checkpoint or the new one, never a half-written one under a
  final name (``state.json`` is the last file written; folders without it are ignored).
- Verified: :func:`load_checkpoint` checks every file against its recorded hash before loading
  anything, so a truncated or flipped file is a :class:`CheckpointError` naming the file, not
  a silently different run. accelerate itself only logs when it cannot read the RNG states.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
_HASH_CHUNK = 16 * 1024 * 1024


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete, corrupt or unreadable; the message names the folder and the file."""


def several_cpu_processes() -> bool:
    """True when launched as several processes (torchrun, ``accelerate launch --multi_gpu``) on a
    machine without an accelerator. accelerate forms a gloo process group for CPU ranks only when
    told the run is on CPU; otherwise every rank would silently train alone on all the data."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    accelerator_api = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, XPU, MPS, ...
    return not (accelerator_api.is_available() if accelerator_api is not None else torch.cuda.is_available())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_folders(out: Path) -> list[Path]:
    """Complete checkpoints under ``out/checkpoints``, oldest first (temporary folders are ignored)."""
    return sorted(p for p in (Path(out) / CHECKPOINTS).glob("step-*") if (p / STATE_FILE).is_file())


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under ``out/checkpoints``, or None."""
    found = checkpoint_folders(out)
    return found[-1] if found else None


def checkpoint_to_resume(out: Path, resume: bool) -> Path | None:
    """The checkpoint a run into ``out`` starts from: the latest with ``--resume`` (which needs
    one), none for a fresh run (which refuses a folder holding checkpoints: never overwrite a run)."""
    latest = latest_checkpoint(out)
    if resume and latest is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {Path(out) / CHECKPOINTS}")
    if not resume and latest is not None:
        raise ValueError(f"--out {out} already holds checkpoints ({latest.name}): pass --resume to continue "
                         "that run, or choose another --out")
    return latest


def save_checkpoint(accelerator, out: Path, step: int, state: dict, keep: int) -> Path:
    """Called by EVERY process: ``accelerator.save_state`` into a temporary folder (each process
    writes its own RNG file, the main process the rest), then the main process hashes the files,
    writes ``state.json``, renames the folder into place and deletes all but the newest ``keep``."""
    root = Path(out) / CHECKPOINTS
    final = root / f"step-{step:08d}"
    partial = root / f".partial-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed while saving
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {p.name: file_sha256(p) for p in sorted(partial.iterdir()) if p.is_file()}
        record = {**state, "step": step, "files": files}
        (partial / STATE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if final.exists():  # the same step saved again (a resumed run re-saving its last step)
            _discard(final)
        os.replace(partial, final)
        for old in checkpoint_folders(out)[:-keep]:
            _discard(old)
        for trash in root.glob(".trash-*"):  # left by a run killed while discarding
            shutil.rmtree(trash, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _discard(folder: Path) -> None:
    """Delete a checkpoint without ever leaving it half-deleted under its own name: renamed away
    first (atomic), then removed. A half-deleted folder that kept its state.json would look like
    a complete checkpoint."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def read_checkpoint_state(folder: Path) -> dict:
    """``state.json`` of ``folder`` (a :class:`CheckpointError` if it is missing or not JSON)."""
    try:
        return json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: {STATE_FILE} is unreadable ({exc})") from None


def verify_checkpoint(folder: Path, process_index: int = 0) -> dict:
    """Check every recorded file of ``folder`` against its SHA-256; returns ``state.json``.

    ``process_index``'s RNG file must be present: without it a resumed run would draw other
    random numbers than the interrupted one.
    """
    folder = Path(folder)
    state = read_checkpoint_state(folder)
    files = state.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"checkpoint {folder}: {STATE_FILE} lists no files (not written by this version of rfad)")
    rng_file = f"random_states_{process_index}.pkl"
    if rng_file not in files:
        raise CheckpointError(f"checkpoint {folder}: no RNG state for process {process_index} ({rng_file}); resume "
                              "with as many processes as wrote it")
    missing = [name for name in sorted(files) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                              f"missing{_older_hint(folder)}")
    for name, expected in sorted(files.items()):
        if file_sha256(folder / name) != expected:
            raise CheckpointError(f"checkpoint {folder}: {name} is corrupt (its SHA-256 differs from the one "
                                  f"recorded when it was written){_older_hint(folder)}")
    return state


def load_checkpoint(accelerator, folder: Path) -> dict:
    """Verify ``folder``, then ``accelerator.load_state`` it (weights, optimizer, accumulation
    counter, this process's RNG states); returns ``state.json``."""
    state = verify_checkpoint(folder, accelerator.process_index)
    try:
        accelerator.load_state(str(folder))
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many types; all mean "cannot resume"
        raise CheckpointError(f"checkpoint {folder} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    return state


def _older_hint(folder: Path) -> str:
    older = [p for p in checkpoint_folders(folder.parent.parent) if p.name < folder.name]
    if not older:
        return ""
    return f"; the previous checkpoint {older[-1].name} is still there: delete {folder.name} to resume from it"


def write_folder_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Let ``write(staging)`` fill a staging folder inside ``out``, then move its files into ``out``
    one by one (``os.replace``), so no output file is ever seen half-written."""
    staging = Path(out) / ".partial-output"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write(staging)
    for file in sorted(staging.iterdir()):
        target = Path(out) / file.name
        if file.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(file, target)
    staging.rmdir()
