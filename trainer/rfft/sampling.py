"""What each RFFT micro-step draws: its rows of the manifest and its random choices (t*, noise seeds).

Both are pure functions of (seed, micro-step index, process) and of the usable rows, never of
what ran before in the process: that is what makes ``--resume`` exact (a resumed run finds a
micro-step's rows and draws from its index alone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from rfad.canvas import CanvasError, CanvasSpec, prepare_canvas
from rfad.trainer.data.manifest import ManifestRow, check_rows, manifest_path, read_manifest, resolve_path


def load_rows(data: str | os.PathLike, split: str, spec: CanvasSpec, echo=print) -> tuple[list[ManifestRow], Path]:
    """(usable rows of ``split``, the manifest's folder).

    Labels are not read by RFFT, so they are cleared before ``check_rows``: a row is dropped for
    a missing or undecodable image or a product without usable alpha, never for its label. A
    product that passes those checks but cannot be placed on the canvas (e.g. its cut-out is
    smaller than ``spec.min_side``) is dropped too. Every drop is reported by reason through
    ``echo``; no dropped row ever enters a batch.
    """
    manifest = manifest_path(data)
    rows = read_manifest(manifest)
    if split == "train":
        rows = [row for row in rows if row.split in ("train", None)]
    elif split != "all":
        rows = [row for row in rows if row.split == split]
    good, report = check_rows([dataclasses.replace(row, label=None) for row in rows], manifest.parent)
    usable = []
    for row in good:
        try:
            prepare_canvas(resolve_path(manifest.parent, row.product), spec)
        except CanvasError as exc:
            report.skip("product_canvas", f"id {row.id!r}: {exc}")
            report.kept -= 1
            continue
        usable.append(row)
    if report.n_skipped:
        echo(report.format(title=f"{manifest} split {split!r}"))
    if not usable:
        raise ValueError(f"--data {data}: no usable rows in split {split!r}")
    return usable, manifest.parent


def rows_fingerprint(rows: list[ManifestRow]) -> str:
    """sha256 over what RFFT reads of each row, in order: a resumed run must see the same rows."""
    return hashlib.sha256("\n".join(f"{r.id}\t{r.product}\t{r.prompt}\t{r.caption}" for r in rows).encode()).hexdigest()


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist())


def micro_batch_rows(n: int, seed: int, micro_index: int, rank: int, world: int, batch_size: int) -> list[int]:
    """Row indices of this process's micro-step ``micro_index`` (counted over the whole run).

    Each epoch is a permutation fixed by (seed, epoch), dealt round-robin to the processes and
    cut to ``n // world`` rows each (every process then has the same number); a process walks
    its share ``batch_size`` rows at a time, across epoch boundaries. Stateless: a resumed run
    finds its rows from the micro-step index alone.
    """
    per_process = n // world
    if per_process < 1:
        raise ValueError(f"{n} usable rows cannot be shared by {world} processes")
    indices = []
    for j in range(batch_size):
        epoch, position = divmod(micro_index * batch_size + j, per_process)
        indices.append(_permutation(n, seed, epoch)[rank::world][position])
    return indices


def micro_step_randomness(seed: int, step: int, micro: int, rank: int, batch_size: int, ddim_steps: int,
                          last_k: int) -> tuple[int, list[int]]:
    """(t* as a step index among the last ``last_k`` of ``ddim_steps``, one noise seed per row),
    drawn from a generator seeded by (seed, optimiser step, micro-step, process) only."""
    rng = np.random.default_rng([seed, step, micro, rank])
    step_index = int(rng.integers(ddim_steps - last_k, ddim_steps))
    seeds = [int(s) for s in rng.integers(0, 2**62, size=batch_size)]
    return step_index, seeds
