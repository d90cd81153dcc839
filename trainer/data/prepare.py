"""``rfad-data prepare``: compute every row's depth and saliency maps once and cache them as PNGs.

RFNet reads I_d and I_s of each generated image (docs/design.md, RFNet). At RF1M scale (1M
images) running DPT and U2-Net inside the training loop would dominate every epoch, so this
step computes both maps once, writes them as 8-bit grayscale PNGs, and writes an updated
manifest whose ``depth``/``saliency`` fields point at them::

    OUT/
      depth/<name>.png        one per row, the size of its generated image, 0..255 = map 0..1
      saliency/<name>.png
      manifest.jsonl          the input rows, paths re-expressed relative to OUT, maps filled in
      manifest.shard-I-of-N.jsonl   (--shard I/N) the rows of one shard, merged later

``<name>`` is a deterministic function of the row id (readable prefix + hash, see
:func:`map_file_name`), so every process and every re-run agrees on it.

Scale and failure handling:

- shards: ``--shard i/n`` takes the rows whose index in the manifest is ``i`` modulo ``n``
  and writes a shard manifest; ``--workers N`` spawns N processes (one shard each, one GPU
  each round-robin when the device is CUDA) and merges their shard manifests in manifest order;
- resumable: a map file that exists and decodes is kept, only missing or unreadable ones are
  computed (so a re-run after a crash, or after deleting one map, redoes only what is missing);
  ``OUT/map_models.json`` records the SHA-256 of the depth and saliency models' files, and a run
  with other models into the same OUT is refused, so that a resumed run never mixes maps of two
  models (hashing DPT-Large's 1.3 GB takes a few seconds per process);
- atomic: each PNG and manifest is written under a temporary name and renamed into place, so a
  killed run never leaves a half-written file under a final name;
- a row whose generated image is missing or does not decode is reported and kept without maps
  (training's ``check_rows`` drops it anyway); it never stops the run.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rfad.trainer.data.manifest import ManifestRow, RowReport, read_manifest, resolve_path, write_manifest

MAP_KINDS = ("depth", "saliency")
MANIFEST_NAME = "manifest.jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# report reasons
MISSING_GENERATED = "missing_generated"
CORRUPT_GENERATED = "corrupt_generated"


@dataclass
class PrepareReport:
    """What one prepare run (or one shard) did: maps computed and kept, rows that could not be read."""

    rows: int = 0
    computed: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in MAP_KINDS})
    kept: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in MAP_KINDS})
    bad: RowReport = field(default_factory=RowReport)

    def merge(self, other: "PrepareReport") -> None:
        self.rows += other.rows
        for kind in MAP_KINDS:
            self.computed[kind] += other.computed[kind]
            self.kept[kind] += other.kept[kind]
        for reason, count in other.bad.skipped.items():
            self.bad.skipped[reason] = self.bad.skipped.get(reason, 0) + count
            shown = self.bad.examples.setdefault(reason, [])
            shown.extend(other.bad.examples.get(reason, [])[: max(0, self.bad.max_examples - len(shown))])
        self.bad.total += other.bad.total
        self.bad.kept += other.bad.kept

    def format(self) -> str:
        lines = [f"prepare: {self.rows} rows"]
        for kind in MAP_KINDS:
            lines.append(f"  {kind:<9} computed {self.computed[kind]:>8}   already there {self.kept[kind]:>8}")
        if self.bad.n_skipped:
            lines.append(f"  {self.bad.n_skipped} rows without maps (their generated image could not be read):")
            lines += self.bad.format_skipped()
        return "\n".join(lines)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; anything else is a ValueError naming the flag."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def map_file_name(row_id: str) -> str:
    """A file name for ``row_id``'s maps: deterministic, filesystem-safe and collision-free.

    Ids may hold slashes or characters a filesystem rejects, and two ids may sanitise to the
    same text, so a short hash of the exact id follows a readable (truncated) sanitised prefix.
    """
    digest = hashlib.sha1(row_id.encode("utf-8")).hexdigest()[:12]
    readable = _UNSAFE.sub("_", row_id).strip("._")[:80] or "row"
    return f"{readable}-{digest}.png"


def shard_manifest_name(index: int, count: int) -> str:
    return f"manifest.shard-{index}-of-{count}.jsonl"


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` as the new manifest stores it: relative to ``folder`` when possible, forward slashes."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive (Windows): keep it absolute
        return path.resolve().as_posix()


def _decodes(path: Path) -> bool:
    """True when ``path`` is a file PIL fully decodes (a truncated map from a crash is not kept)."""
    if not path.is_file():
        return False
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "compute it again"
        return False


def _load_generated(path: Path) -> tuple[torch.Tensor | None, str | None]:
    """(float [3, H, W] in [0, 1], None), or (None, why) when the file is missing or does not decode."""
    if not path.is_file():
        return None, MISSING_GENERATED
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except Exception:  # noqa: BLE001 - PIL raises many types for damaged files; all mean "bad row"
        return None, CORRUPT_GENERATED
    return torch.from_numpy(array.transpose(2, 0, 1).copy()), None


def save_map_png(map01: torch.Tensor, path: Path) -> None:
    """Write a [1, H, W] or [H, W] map in [0, 1] as an 8-bit grayscale PNG, atomically."""
    values = (map01.detach().float().squeeze(0).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        Image.fromarray(values, mode="L").save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_map_models(depth: str | os.PathLike, saliency: str | os.PathLike, device: str):
    """{"depth": DepthEstimator, "saliency": SaliencyEstimator} on ``device``, eval mode."""
    from rfad.models.maps import DepthEstimator, SaliencyEstimator

    return {"depth": DepthEstimator.from_pretrained(depth).to(device).eval(),
            "saliency": SaliencyEstimator.from_pretrained(saliency).to(device).eval()}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; an unavailable CUDA request is a ValueError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return device


MODELS_RECORD = "map_models.json"


def _model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of a model file, or over the SHA-256 of every file of a model folder (by relative name)."""
    import json

    from rfad.miniworld import file_hashes, file_sha256

    root = Path(path)
    if root.is_file():
        return file_sha256(root)
    return hashlib.sha256(json.dumps(file_hashes(root), sort_keys=True).encode()).hexdigest()


def claim_map_folder(out: Path, depth: str | os.PathLike, saliency: str | os.PathLike) -> None:
    """Record in ``out`` which models its maps come from (:data:`MODELS_RECORD`), or refuse when
    ``out`` already holds maps of other models: kept maps are trusted on a re-run, so maps of two
    models would otherwise end up in one dataset without a trace."""
    import json

    record = {"depth": {"path": str(depth), "sha256": _model_fingerprint(depth)},
              "saliency": {"path": str(saliency), "sha256": _model_fingerprint(saliency)}}
    path = out / MODELS_RECORD
    if path.is_file():
        kept = json.loads(path.read_text())
        changed = [kind for kind in MAP_KINDS if kept.get(kind, {}).get("sha256") != record[kind]["sha256"]]
        if changed:
            raise ValueError(f"--out {out}: its maps were computed with other {' and '.join(changed)} models ("
                             + "; ".join(f"--{kind} was {kept.get(kind, {}).get('path')}" for kind in changed)
                             + "); choose another --out, or delete it to recompute every map")
        return
    if any((out / kind).is_dir() and any((out / kind).iterdir()) for kind in MAP_KINDS):
        raise ValueError(f"--out {out}: holds maps without {MODELS_RECORD}, so which models made them is unknown; "
                         "choose another --out, or delete it to recompute every map")
    out.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # shards may claim at once: same content
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


def prepare_shard(manifest: str | os.PathLike, depth: str | os.PathLike, saliency: str | os.PathLike,
                  out: str | os.PathLike, shard: tuple[int, int] = (0, 1), batch_size: int = 8,
                  device: str = "cpu", progress: bool = True, position: int = 0,
                  write_shard_manifest: bool = True) -> tuple[list[ManifestRow], PrepareReport]:
    """Compute the missing maps of one shard's rows; returns (updated rows, report).

    The updated rows carry paths relative to ``out``. With ``write_shard_manifest`` they are also
    written to ``out/manifest.shard-I-of-N.jsonl`` (the unit :func:`merge_shards` reads).
    """
    manifest, out = Path(manifest), Path(out)
    index, count = shard
    rows = [row for number, row in enumerate(read_manifest(manifest)) if number % count == index]
    root = manifest.parent
    out.mkdir(parents=True, exist_ok=True)
    models = None  # loaded only when something must be computed: a finished shard re-runs in seconds
    report = PrepareReport(rows=len(rows))
    report.bad.total = len(rows)
    updated: list[ManifestRow] = []
    bar = tqdm(total=len(rows), desc=f"maps {index}/{count}" if count > 1 else "maps", unit="img",
               position=position, disable=not progress, leave=True)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        pending: dict[str, list[tuple[torch.Tensor, Path]]] = {kind: [] for kind in MAP_KINDS}
        for row in batch:
            targets = {kind: out / kind / map_file_name(row.id) for kind in MAP_KINDS}
            new = ManifestRow(**row.to_dict())
            new.generated = _relative_to(resolve_path(root, row.generated), out)
            new.product = _relative_to(resolve_path(root, row.product), out)
            new.depth = new.saliency = None
            missing = [kind for kind in MAP_KINDS if not _decodes(targets[kind])]
            image = None
            if missing:
                image, problem = _load_generated(resolve_path(root, row.generated))
                if image is None:
                    report.bad.skip(problem, f"id {row.id!r}: generated {row.generated}")
                    updated.append(new)
                    continue
            for kind in MAP_KINDS:
                if kind in missing:
                    pending[kind].append((image, targets[kind]))
                    report.computed[kind] += 1
                else:
                    report.kept[kind] += 1
                setattr(new, kind, _relative_to(targets[kind], out))
            updated.append(new)
        if any(pending.values()) and models is None:
            models = load_map_models(depth, saliency, device)
        for kind, items in pending.items():
            _compute_and_save(models[kind] if items else None, items, device)
        bar.update(len(batch))
    bar.close()
    report.bad.kept = len(rows) - report.bad.n_skipped
    if write_shard_manifest:
        write_manifest(updated, out / shard_manifest_name(index, count))
    return updated, report


@torch.no_grad()
def _compute_and_save(model, items: list[tuple[torch.Tensor, Path]], device: str) -> None:
    """Run ``model`` over [3, H, W] images and save each [1, H, W] map; images are batched by size
    because the maps must keep each generated image's own resolution."""
    by_size: dict[tuple[int, int], list[tuple[torch.Tensor, Path]]] = {}
    for image, path in items:
        by_size.setdefault(tuple(image.shape[-2:]), []).append((image, path))
    for group in by_size.values():
        maps = model(torch.stack([image for image, _ in group]).to(device))  # [b, 1, H, W]
        for map01, (_, path) in zip(maps, group):
            save_map_png(map01, path)


def merge_shards(manifest: str | os.PathLike, out: str | os.PathLike, count: int) -> Path:
    """Merge ``out/manifest.shard-*-of-count.jsonl`` into ``out/manifest.jsonl`` in the input's order."""
    manifest, out = Path(manifest), Path(out)
    by_id: dict[str, ManifestRow] = {}
    for index in range(count):
        shard_file = out / shard_manifest_name(index, count)
        if not shard_file.is_file():
            raise FileNotFoundError(f"shard manifest {shard_file} is missing: run --shard {index}/{count} first")
        for row in read_manifest(shard_file):
            by_id[row.id] = row
    original = read_manifest(manifest)
    absent = [row.id for row in original if row.id not in by_id]
    if absent:
        raise ValueError(f"{len(absent)} rows of {manifest} are in no shard manifest (e.g. {absent[0]!r}); "
                         "were the shards run on another manifest?")
    return write_manifest([by_id[row.id] for row in original], out / MANIFEST_NAME)


def _worker(arguments: dict) -> PrepareReport:
    """One spawned process: one shard, its share of the CPU threads (or its own GPU)."""
    torch.set_num_threads(arguments.pop("threads"))
    # A thread lock for tqdm: its default process lock is a semaphore that the spawn context's
    # resource tracker reports as leaked at exit. Each worker draws its own line (``position``).
    tqdm.set_lock(threading.RLock())
    _, report = prepare_shard(**arguments)
    return report


def prepare_maps(manifest: str | os.PathLike, depth: str | os.PathLike, saliency: str | os.PathLike,
                 out: str | os.PathLike, shard: tuple[int, int] | None = None, workers: int = 1,
                 batch_size: int = 8, device: str = "auto", progress: bool = True) -> tuple[Path, PrepareReport]:
    """The whole prepare step; returns (manifest written, report).

    ``shard`` (i, n): only that shard, written as a shard manifest (merge with ``workers`` or
    :func:`merge_shards`). ``workers`` > 1: that many spawned processes, then the merged manifest.
    Otherwise one process writes ``out/manifest.jsonl`` directly.
    """
    manifest, out = Path(manifest), Path(out)
    if not manifest.is_file():
        raise FileNotFoundError(f"--manifest {manifest} does not exist")
    if shard is not None and workers > 1:
        raise ValueError("--shard and --workers exclude each other: --workers N runs shards 0/N .. N-1/N itself")
    if workers < 1 or batch_size < 1:
        raise ValueError("--workers and --batch-size must be at least 1")
    if out.resolve() == manifest.parent.resolve() and manifest.name == MANIFEST_NAME:
        raise ValueError(f"--out {out} would overwrite the input manifest {manifest}; choose another folder")
    for path, flag in ((depth, "--depth"), (saliency, "--saliency")):
        if not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    device = resolve_device(device)
    read_manifest(manifest)  # a broken manifest fails here, once, not in every worker
    claim_map_folder(out, depth, saliency)
    if shard is not None:
        _, report = prepare_shard(manifest, depth, saliency, out, shard, batch_size, device, progress)
        return out / shard_manifest_name(*shard), report
    if workers == 1:
        rows, report = prepare_shard(manifest, depth, saliency, out, (0, 1), batch_size, device, progress,
                                     write_shard_manifest=False)
        return write_manifest(rows, out / MANIFEST_NAME), report

    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [dict(manifest=manifest, depth=depth, saliency=saliency, out=out, shard=(i, workers),
                 batch_size=batch_size, device=f"cuda:{i % gpus}" if gpus else device, progress=progress,
                 position=i, threads=threads) for i in range(workers)]
    # spawn, not fork: a forked child of a process that has touched CUDA or OpenMP can hang.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        reports = pool.map(_worker, jobs)
    report = PrepareReport()
    report.bad.total = 0
    for shard_report in reports:
        report.merge(shard_report)
    return merge_shards(manifest, out, workers), report
