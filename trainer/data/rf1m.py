"""Import the RF1M release (generated images, ``label.txt``, RGBA products) into a manifest.

The line format of RF1M's ``label.txt`` is not documented publicly, so the importer accepts
the plausible ones and refuses anything else:

- one sample per line: ``name<sep>label``; ``<sep>`` is a tab, a comma, or a run of spaces
  (then the name is the first token and the label is the rest of the line, so
  ``img_001.jpg Space Mismatch`` works);
- ``name`` is the generated image's file name, with or without extension, optionally with a
  folder relative to the images folder; images are found anywhere under that folder;
- ``label`` is a class name in any case and spelling of separators (``Space Mismatch``,
  ``space_mismatch``, ``SpaceMismatch``, ``space-mismatch``) or its index in the release's
  order: 0 Available, 1 Unsuitable, 2 Space Mismatch, 3 Size Mismatch, 4 Indistinctiveness,
  5 Shape Hallucination;
- blank lines and lines starting with ``#`` are ignored, and so is a first line whose label
  column reads ``label`` or ``class`` (a CSV header).

A line that fits none of this (one field, three fields, a label that is neither a word nor an
integer) raises :class:`RF1MFormatError` naming the line number and quoting the line: that
file is in another format, and importing half of it would be wrong. A line that fits but
cannot become a sample is skipped and counted by reason in the :class:`ImportReport`:
``unsuitable_dropped`` (the release's "Unsuitable" label, dropped unless ``keep_unsuitable``),
``unknown_label``, ``duplicate_name`` (the first line of a name wins), ``generated_missing``,
``generated_ambiguous`` (a bare file name found in two folders), ``product_missing`` (no product
with the image's file stem and a .png or .webp suffix; .png wins when both exist),
``product_ambiguous`` (that stem in two product folders).

Prompts are not in the release: ``prompt`` is "". Captions (product titles) are "" unless a
captions file is given: JSONL lines ``{"name": ..., "caption": ...}`` (optionally ``"prompt"``)
or TSV lines ``name<TAB>caption``, matched by name or by file stem.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from rfad.trainer.data.manifest import ManifestRow, RowReport, manifest_format, write_manifest

RF1M_LABELS = (
    "Available",
    "Unsuitable",
    "Space Mismatch",
    "Size Mismatch",
    "Indistinctiveness",
    "Shape Hallucination",
)
UNSUITABLE = "Unsuitable"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PRODUCT_SUFFIXES = (".png", ".webp")  # .png first: preferred when both exist

# skip reasons
UNSUITABLE_DROPPED = "unsuitable_dropped"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_NAME = "duplicate_name"
GENERATED_MISSING = "generated_missing"
GENERATED_AMBIGUOUS = "generated_ambiguous"
PRODUCT_MISSING = "product_missing"
PRODUCT_AMBIGUOUS = "product_ambiguous"

_WORD_LABEL = re.compile(r"[^\W\d_][\w\- ]*")  # starts with a letter: a class name, maybe unknown
_INDEX_LABEL = re.compile(r"\d+")


class RF1MFormatError(ValueError):
    """The labels (or captions) file is not in an accepted format; names the line number and quotes it."""


@dataclass
class ImportReport(RowReport):
    """An RF1M import: lines read (``total``), rows written (``kept``), skips by reason."""

    labels: dict[str, int] = field(default_factory=dict)
    captioned: int = 0
    manifest: str = ""

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "labels": dict(self.labels),
            "captioned": self.captioned,
            "manifest": self.manifest,
        }

    def format(self, title: str = "RF1M import") -> str:
        lines = [
            f"{title}: {self.total} labelled lines, {self.kept} rows written to {self.manifest}"
            f" ({self.captioned} with captions), {self.n_skipped} skipped"
        ]
        width = max([len("label")] + [len(name) for name in self.labels])
        lines.append(f"  {'label':<{width}}  {'rows':>8}")
        for name in RF1M_LABELS:
            if name in self.labels:
                lines.append(f"  {name:<{width}}  {self.labels[name]:>8}")
        return "\n".join(lines + self.format_skipped())


def _normalise(label: str) -> str:
    return re.sub(r"[^0-9a-z]", "", label.lower())


_BY_NORMALISED = {_normalise(name): name for name in RF1M_LABELS}


def parse_label_line(line: str, number: int) -> tuple[str, str] | None:
    """``(name, raw_label)`` of one ``label.txt`` line, ``None`` for a blank or comment line.

    Raises :class:`RF1MFormatError` when the line fits no accepted format.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if "\t" in text:
        parts = [part.strip() for part in text.split("\t")]
    elif "," in text:
        parts = [part.strip() for part in text.split(",")]
    else:
        parts = text.split(None, 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise RF1MFormatError(
            f"line {number}: expected 'name<TAB|,|spaces>label', got {len(parts)} field(s): {text!r}"
        )
    name, label = parts
    if not (_WORD_LABEL.fullmatch(label) or _INDEX_LABEL.fullmatch(label)):
        raise RF1MFormatError(
            f"line {number}: the label {label!r} is neither a class name nor an index 0-5: {text!r}"
        )
    return name, label


def canonical_label(raw: str) -> str | None:
    """The release's class name for a raw label (name in any spelling, or index), else ``None``."""
    if _INDEX_LABEL.fullmatch(raw):
        index = int(raw)
        return RF1M_LABELS[index] if index < len(RF1M_LABELS) else None
    return _BY_NORMALISED.get(_normalise(raw))


class _FileIndex:
    """Files under a folder (recursive) by relative path, file name and stem; built once."""

    def __init__(self, folder: Path, suffixes: tuple[str, ...]):
        self.folder = folder
        self.by_relative: dict[str, Path] = {}
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for directory, subdirs, files in os.walk(folder):
            subdirs.sort()
            for file_name in sorted(files):
                if Path(file_name).suffix.lower() not in suffixes:
                    continue
                path = Path(directory) / file_name
                self.by_relative[path.relative_to(folder).as_posix()] = path
                self.by_name.setdefault(file_name, []).append(path)
                self.by_stem.setdefault(Path(file_name).stem, []).append(path)

    def find(self, name: str) -> list[Path]:
        """Candidates for ``name``: exact relative path, else bare file name, else stem."""
        name = name.replace("\\", "/")
        if name.startswith("./"):
            name = name[2:]
        if name in self.by_relative:
            return [self.by_relative[name]]
        base = name.rsplit("/", 1)[-1]
        if base in self.by_name:
            return self.by_name[base]
        if Path(base).suffix.lower() not in IMAGE_SUFFIXES:
            return self.by_stem.get(base, [])
        return []


def read_captions(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``name -> {"caption": ..., "prompt": ...}`` from a ``.jsonl`` or ``.tsv``/``.txt`` file."""
    path = Path(path)
    captions: dict[str, dict[str, str]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                continue
            where = f"{path} line {number}"
            if path.suffix.lower() == ".jsonl":
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as error:
                    raise RF1MFormatError(f"{where}: not valid JSON ({error.msg}): {text!r}") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(obj.get("caption"), str):
                    raise RF1MFormatError(f"{where}: expected {{\"name\": str, \"caption\": str}}: {text!r}")
                entry = {"caption": obj["caption"]}
                if isinstance(obj.get("prompt"), str):
                    entry["prompt"] = obj["prompt"]
                captions[obj["name"]] = entry
            else:
                parts = text.split("\t")
                if len(parts) != 2 or not parts[0].strip():
                    raise RF1MFormatError(f"{where}: expected 'name<TAB>caption': {text!r}")
                captions[parts[0].strip()] = {"caption": parts[1].strip()}
    return captions


def import_rf1m(
    labels_txt: str | os.PathLike,
    images_dir: str | os.PathLike,
    products_dir: str | os.PathLike,
    out_manifest: str | os.PathLike,
    keep_unsuitable: bool = False,
    captions: str | os.PathLike | None = None,
    progress: bool = False,
) -> ImportReport:
    """Write a manifest of the RF1M samples that have a label, an image and a product.

    Paths in the manifest are relative to ``out_manifest``'s folder. Split is left null (the
    release does not mark its test products). See the module docstring for the accepted
    ``label.txt`` format and the skip reasons.
    """
    labels_txt, images_dir, products_dir = Path(labels_txt), Path(images_dir), Path(products_dir)
    out_manifest = Path(out_manifest)
    manifest_format(out_manifest)  # an unknown suffix fails before the slow part
    if not labels_txt.is_file():
        raise FileNotFoundError(f"labels file not found: {labels_txt}")
    for what, folder in (("images", images_dir), ("products", products_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    caption_map = read_captions(captions) if captions is not None else {}

    # Parse the whole file first: a file in another format is refused before anything is written.
    entries: list[tuple[int, str, str]] = []
    with open(labels_txt, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            try:
                parsed = parse_label_line(line, number)
            except RF1MFormatError as error:
                raise RF1MFormatError(f"{labels_txt} {error}") from None
            if parsed is None:
                continue
            if not entries and _normalise(parsed[1]) in ("label", "class"):
                continue  # a CSV header line
            entries.append((number, *parsed))

    images = _FileIndex(images_dir, IMAGE_SUFFIXES)
    products = _FileIndex(products_dir, PRODUCT_SUFFIXES)
    root = out_manifest.parent
    report = ImportReport(total=len(entries), manifest=str(out_manifest))
    labels = Counter()
    seen: dict[str, int] = {}
    rows: list[ManifestRow] = []
    for number, name, raw_label in tqdm(entries, desc="importing", unit="line", disable=not progress):
        where = f"line {number}: {name}"
        label = canonical_label(raw_label)
        if label is None:
            report.skip(UNKNOWN_LABEL, f"{where} (label {raw_label!r})")
            continue
        if name in seen:
            report.skip(DUPLICATE_NAME, f"{where} (first on line {seen[name]})")
            continue
        seen[name] = number
        if label == UNSUITABLE and not keep_unsuitable:
            report.skip(UNSUITABLE_DROPPED, where)
            continue
        found = images.find(name)
        if not found:
            report.skip(GENERATED_MISSING, f"{where} (not under {images_dir})")
            continue
        if len(found) > 1:
            report.skip(GENERATED_AMBIGUOUS, f"{where} ({len(found)} files: {found[0]}, {found[1]}, ...)")
            continue
        generated = found[0]
        product = _product_for(products, generated.stem)
        if not product:
            report.skip(PRODUCT_MISSING, f"{where} (no {generated.stem}.png/.webp under {products_dir})")
            continue
        if len(product) > 1:
            report.skip(PRODUCT_AMBIGUOUS, f"{where} ({len(product)} files: {product[0]}, {product[1]}, ...)")
            continue
        text = caption_map.get(name) or caption_map.get(generated.name) or caption_map.get(generated.stem) or {}
        if "caption" in text:
            report.captioned += 1
        rows.append(
            ManifestRow(
                id=name,
                generated=_relative(generated, root),
                product=_relative(product[0], root),
                prompt=text.get("prompt", ""),
                caption=text.get("caption", ""),
                label=label,
            )
        )
        labels[label] += 1
    write_manifest(rows, out_manifest)
    report.kept = len(rows)
    report.labels = {name: labels[name] for name in RF1M_LABELS if labels[name]}
    return report


def _product_for(products: _FileIndex, stem: str) -> list[Path]:
    """The product files of ``stem`` with the preferred suffix (.png before .webp)."""
    for suffix in PRODUCT_SUFFIXES:
        candidates = [p for p in products.by_stem.get(stem, []) if p.suffix.lower() == suffix]
        if candidates:
            return candidates
    return []


def _relative(path: Path, root: Path) -> str:
    # abspath, not resolve: a folder of symlinks stays the folder the user named.
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()
