"""Atomic, pickle-free training checkpoints shared by the trainers.

A checkpoint is a folder ``step-00000012/`` holding the trainable weights (safetensors), the
optimizer state and each process's torch RNG state (``torch.save`` of tensors and numbers only,
read back with ``weights_only=True``), and ``state.json`` (epoch, step, anything the trainer
needs). It is written under a temporary name and renamed into place, so a run killed at any
moment leaves either the previous checkpoint or the new one, never a half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete or unreadable; the message names it."""


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def save_checkpoint(root: Path, step: int, weights: dict[str, torch.Tensor], optimizer_state: dict,
                    rng_states: list[torch.Tensor], state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically under ``root``; keep the newest ``keep`` checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
    torch.save(optimizer_state, tmp / OPTIMIZER)
    for rank, rng in enumerate(rng_states):
        torch.save(rng, tmp / f"rng-{rank}.pt")
    (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary folders are ignored)."""
    found = sorted(p for p in root.glob("step-*") if (p / STATE).is_file())
    return found[-1] if found else None


def load_checkpoint(folder: Path, rank: int = 0) -> tuple[dict, dict, torch.Tensor | None, dict]:
    """(weights, optimizer state, this rank's RNG state or None, state dict) of ``folder``."""
    try:
        state = json.loads((folder / STATE).read_text())
        weights = load_file(str(folder / WEIGHTS))
        optimizer_state = torch.load(folder / OPTIMIZER, weights_only=True)
        rng_file = folder / f"rng-{rank}.pt"
        rng = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {folder} is corrupt or incomplete: {exc}") from exc
    return weights, optimizer_state, rng, state
