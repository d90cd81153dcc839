"""The dataset manifest: one row per sample, stored as JSONL or Parquet beside the image files.

Every dataset the trainers read (an RF1M import, the synthetic set, your own data) is a manifest
plus image files. The format is chosen by the file suffix: ``.jsonl`` (one JSON object per line)
or ``.parquet`` (one column per field, all strings, nulls allowed; needs ``pyarrow``).

| field       | type          | required | meaning                                                                 |
|-------------|---------------|----------|-------------------------------------------------------------------------|
| `id`        | string        | yes      | unique sample id                                                        |
| `generated` | path          | yes      | the generated ad image (any format PIL decodes; RGB)                    |
| `product`   | path          | yes      | the product cut-out: RGBA PNG (or WebP), transparent background         |
| `prompt`    | string        | no ("")  | the generation prompt                                                   |
| `caption`   | string        | no ("")  | the product title, e.g. "red ceramic mug 350ml" (RFNet's text input)    |
| `label`     | string / null | no       | one of `CLASS_NAMES`; null for unlabeled rows (e.g. RFFT training rows) |
| `split`     | string / null | no       | "train", "val", "test", or null (unassigned)                            |
| `depth`     | path / null   | no       | cached depth map of `generated` (1-channel PNG) from the prepare step   |
| `saliency`  | path / null   | no       | cached saliency map of `generated` (1-channel PNG), same                |

Paths are relative to the manifest's folder (absolute paths are accepted as they are); write
them with forward slashes. ``CLASS_NAMES`` order, which RFNet's head uses:
Available, Space Mismatch, Size Mismatch, Indistinctiveness, Shape Hallucination.

Two kinds of trouble are told apart:

- a broken FILE (invalid JSON, a missing required field, a wrong type, an unknown field, a
  duplicate id) makes :func:`read_manifest` raise :class:`ManifestError` naming the line (JSONL)
  or row (Parquet, counted from 1) and the field: the file is not a manifest;
- a bad SAMPLE (a missing or undecodable image, an unknown label, a product without alpha) is
  not fatal: :func:`check_rows` drops it and counts it by reason in a :class:`RowReport`, so
  bad rows never enter a batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

# One definition for the whole project: the request contract (torch-free) holds the class order.
from rfad.contract import CLASS_NAMES

SPLITS = ("train", "val", "test")
REQUIRED_FIELDS = ("id", "generated", "product")
PATH_FIELDS = ("generated", "product", "depth", "saliency")
FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}


class ManifestError(ValueError):
    """The manifest file is structurally broken; the message names the file, line/row and field."""


@dataclass
class ManifestRow:
    """One sample. Paths are relative to the manifest's folder (see the module docstring)."""

    id: str
    generated: str
    product: str
    prompt: str = ""
    caption: str = ""
    label: str | None = None
    split: str | None = None
    depth: str | None = None
    saliency: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def files(self, root: str | os.PathLike) -> dict[str, Path]:
        """The row's image files resolved against ``root`` (the manifest's folder), set fields only."""
        return {
            name: resolve_path(root, getattr(self, name))
            for name in PATH_FIELDS
            if getattr(self, name) is not None
        }


FIELD_NAMES = tuple(f.name for f in fields(ManifestRow))


def resolve_path(root: str | os.PathLike, path: str) -> Path:
    """``path`` as stored in a manifest, resolved against the manifest's folder ``root``."""
    return Path(root) / path  # an absolute ``path`` wins over ``root``


def manifest_path(data: str | os.PathLike) -> Path:
    """``--data``: a manifest file, or a folder holding ``manifest.jsonl`` / ``manifest.parquet``."""
    path = Path(data)
    if path.is_dir():
        for name in ("manifest.jsonl", "manifest.parquet"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"--data {path}: no manifest.jsonl or manifest.parquet in that folder")
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist")
    return path


def manifest_format(path: str | os.PathLike) -> str:
    """``"jsonl"`` or ``"parquet"`` from the suffix of ``path``; any other suffix is a ValueError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: unknown manifest format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


def row_from_mapping(obj, where: str, strict_labels: bool = False) -> ManifestRow:
    """Validate one decoded row; ``where`` (e.g. ``"m.jsonl line 3"``) prefixes every error."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELD_NAMES))
    if unknown:
        raise ManifestError(
            f"{where}: unknown field {unknown[0]!r} (fields are: {', '.join(FIELD_NAMES)})"
        )
    for name in REQUIRED_FIELDS:
        if obj.get(name) is None:
            raise ManifestError(f"{where}: missing required field {name!r}")
    for name in FIELD_NAMES:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise ManifestError(
                f"{where}: field {name!r} must be a string"
                f"{'' if name in REQUIRED_FIELDS else ' or null'}, got {type(value).__name__} {value!r}"
            )
    for name in REQUIRED_FIELDS:
        if not obj[name].strip():
            raise ManifestError(f"{where}: field {name!r} is empty")
    if obj.get("split") is not None and obj["split"] not in SPLITS:
        raise ManifestError(
            f"{where}: field 'split' is {obj['split']!r}; expected one of {', '.join(SPLITS)} or null"
        )
    if strict_labels and obj.get("label") is not None and obj["label"] not in CLASS_NAMES:
        raise ManifestError(
            f"{where}: field 'label' is {obj['label']!r}; expected one of {', '.join(CLASS_NAMES)} or null"
        )
    values = {name: obj.get(name) for name in FIELD_NAMES}
    values["prompt"] = values["prompt"] or ""
    values["caption"] = values["caption"] or ""
    return ManifestRow(**values)


def _check_unique(rows_with_where: Iterable[tuple[ManifestRow, str]]) -> None:
    first_seen: dict[str, str] = {}
    for row, where in rows_with_where:
        if row.id in first_seen:
            raise ManifestError(f"{where}: duplicate id {row.id!r} (first at {first_seen[row.id]})")
        first_seen[row.id] = where


def read_manifest(path: str | os.PathLike, strict_labels: bool = False) -> list[ManifestRow]:
    """Read and validate a manifest (``.jsonl`` or ``.parquet``).

    Raises :class:`ManifestError` for a structurally broken file (see the module docstring).
    Unknown label values are structurally fine and left to :func:`check_rows` (which drops and
    counts them) unless ``strict_labels`` makes them a ManifestError too.
    """
    path = Path(path)
    fmt = manifest_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    located: list[tuple[ManifestRow, str]] = []
    if fmt == "jsonl":
        with open(path, encoding="utf-8-sig") as f:  # -sig: tolerate a byte-order mark
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path} line {number}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None
                located.append((row_from_mapping(obj, where, strict_labels), where))
    else:
        pq = _import_parquet()
        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow raises several unrelated types for a bad file
            raise ManifestError(f"{path}: not a readable Parquet file ({error})") from None
        for name in REQUIRED_FIELDS:
            if name not in table.column_names:
                raise ManifestError(f"{path}: missing required column {name!r}")
        for number, obj in enumerate(table.to_pylist(), start=1):
            where = f"{path} row {number}"
            located.append((row_from_mapping(obj, where, strict_labels), where))
    _check_unique(located)
    return [row for row, _ in located]


def write_manifest(rows: Iterable[ManifestRow], path: str | os.PathLike) -> Path:
    """Write ``rows`` as JSONL or Parquet (by suffix), validated as :func:`read_manifest` would.

    The file is written beside its final name and renamed into place, so a crash never leaves a
    half-written manifest.
    """
    path = Path(path)
    fmt = manifest_format(path)
    rows = list(rows)
    located = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, ManifestRow):
            raise TypeError(f"row {number}: expected a ManifestRow, got {type(row).__name__}")
        where = f"row {number} (id {row.id!r})"
        located.append((row_from_mapping(row.to_dict(), where), where))
    _check_unique(located)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        if fmt == "jsonl":
            with open(partial, "w", encoding="utf-8", newline="\n") as f:
                for row in rows:
                    f.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
        else:
            pq = _import_parquet()
            import pyarrow as pa

            schema = pa.schema([(name, pa.string()) for name in FIELD_NAMES])
            columns = {name: [getattr(row, name) for row in rows] for name in FIELD_NAMES}
            pq.write_table(pa.Table.from_pydict(columns, schema=schema), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _import_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(
            "Parquet manifests need pyarrow: pip install 'rfad[train]' (or use a .jsonl manifest)"
        ) from error
    return pq


@dataclass
class RowReport:
    """Rows seen and kept, and rows skipped counted by reason with the first few examples each."""

    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(example)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "examples": {reason: list(shown) for reason, shown in self.examples.items()},
        }

    def format_skipped(self) -> list[str]:
        """Table lines: one per skip reason with its count and first example."""
        if not self.skipped:
            return ["  skipped: none"]
        width = max(len("skipped"), *(len(reason) for reason in self.skipped))
        lines = [f"  {'skipped':<{width}}  {'rows':>8}  first example"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  {reason:<{width}}  {count:>8}  {self.examples[reason][0]}")
        return lines

    def format(self, title: str = "check") -> str:
        lines = [f"{title}: {self.total} rows, {self.kept} kept, {self.n_skipped} skipped"]
        return "\n".join(lines + self.format_skipped())


# check_rows reasons
MISSING_FILE = "missing_file"
UNKNOWN_LABEL = "unknown_label"
CORRUPT_IMAGE = "corrupt_image"
PRODUCT_NO_ALPHA = "product_no_alpha"
PRODUCT_OPAQUE = "product_alpha_opaque"
PRODUCT_EMPTY = "product_alpha_empty"


def check_rows(
    rows: Iterable[ManifestRow],
    root: str | os.PathLike,
    progress: bool = False,
    max_examples: int = 3,
) -> tuple[list[ManifestRow], RowReport]:
    """Keep the rows whose files exist and decode and whose label is known; count the rest.

    Per-sample problems are never fatal. Each dropped row is counted under its first problem:
    ``unknown_label`` (label not in CLASS_NAMES; null is fine), ``missing_file``,
    ``corrupt_image`` (PIL ``verify`` or ``load`` fails), ``product_no_alpha`` (the product has
    no alpha channel), ``product_alpha_opaque`` (alpha 255 everywhere: nothing is cut out) or
    ``product_alpha_empty`` (alpha 0 everywhere: no product). ``root`` is the manifest's folder.
    """
    rows = list(rows)
    report = RowReport(total=len(rows), max_examples=max_examples)
    good: list[ManifestRow] = []
    for row in tqdm(rows, desc="checking", unit="row", disable=not progress):
        problem = _row_problem(row, root)
        if problem is None:
            good.append(row)
        else:
            reason, detail = problem
            report.skip(reason, f"id {row.id!r}: {detail}")
    report.kept = len(good)
    return good, report


def _row_problem(row: ManifestRow, root) -> tuple[str, str] | None:
    if row.label is not None and row.label not in CLASS_NAMES:
        return UNKNOWN_LABEL, f"label {row.label!r}"
    files = row.files(root)
    for name, path in files.items():
        if not path.is_file():
            return MISSING_FILE, f"{name} {getattr(row, name)} not found"
    images = {}
    for name, path in files.items():
        image, error = _decode(path)
        if error is not None:
            return CORRUPT_IMAGE, f"{name} {getattr(row, name)}: {error}"
        images[name] = image
    return _alpha_problem(images["product"], row.product)


def _decode(path: Path):
    """(image, None) when PIL both verifies and fully loads ``path``, else (None, message)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()  # checks structure and checksums; the image is unusable afterwards
        image = Image.open(path)
        image.load()  # verify() does not decode pixel data: a truncated stream fails here
        return image, None
    # A damaged file can surface as OSError, SyntaxError, ValueError, struct.error, ...: every
    # one means "this sample does not decode", and the message goes into the report.
    except Exception as error:  # noqa: BLE001
        return None, f"{type(error).__name__}: {error}"


def _alpha_problem(image, name: str) -> tuple[str, str] | None:
    if "A" not in image.getbands() and "transparency" not in image.info:
        return PRODUCT_NO_ALPHA, f"product {name} has mode {image.mode} without alpha"
    low, high = image.convert("RGBA").getchannel("A").getextrema()
    if low == 255:
        return PRODUCT_OPAQUE, f"product {name}: alpha is 255 everywhere (not a cut-out)"
    if high == 0:
        return PRODUCT_EMPTY, f"product {name}: alpha is 0 everywhere (no product)"
    return None
