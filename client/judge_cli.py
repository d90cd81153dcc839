"""``rfad-client judge``: RFNet's verdicts on a folder (or JSONL list) of ad images, as JSONL.

Images are sent in requests of up to ``--batch-size`` that share a product, a caption and an
image size (the server judges one size per request); sizes are read from the file headers
when Pillow is installed, else a mixed-size folder is refused by the server per request.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from itertools import groupby
from pathlib import Path

import click

from rfad.client import RfadClient, RfadClientError
from rfad.client.jsonl import beside, jsonl_objects
from rfad.client.options import security_options, url_option
from rfad.contract import CLASS_NAMES, JUDGE_MAX_IMAGES, JUDGE_THRESHOLD

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_ITEM_FIELDS = {"image", "id", "product", "caption"}


def read_items(images: Path, product: Path | None, caption: str) -> list[dict]:
    """The images to judge: every image file of a folder (sorted by name), or one JSON object per
    line of a JSONL file (``image`` required; ``id``, ``product``, ``caption`` override the
    command's; relative paths from the file's folder). Raises ClickException naming the line."""
    if images.is_dir():
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise click.ClickException(f"--images {images}: no {', '.join(IMAGE_SUFFIXES)} files in that folder")
        items = [{"id": p.name, "image": p, "product": product, "caption": caption} for p in files]
    else:
        items = []
        for number, where, item in jsonl_objects(images, _ITEM_FIELDS):
            if "image" not in item:
                raise click.ClickException(f"{where}: expected a JSON object with an \"image\" path")
            items.append({"id": str(item.get("id", number)), "image": beside(images, item["image"]),
                          "product": beside(images, item["product"]) if "product" in item else product,
                          "caption": str(item.get("caption", caption))})
        if not items:
            raise click.ClickException(f"--images {images}: no lines")
    missing = [item["id"] for item in items if item["product"] is None]
    if missing:
        raise click.ClickException(f"--product is required (no product for {missing[0]!r})")
    return items


def _image_size(path: Path):
    """(width, height) from the header when Pillow is installed, else None (the server then checks)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 - an unreadable file is sent as is: the server names it
        return None


def batches(items: list[dict], batch_size: int) -> list[list[dict]]:
    """Requests of up to ``batch_size`` items sharing product, caption and image size, in input order within each."""
    key = lambda item: (str(item["product"]), item["caption"], str(_image_size(item["image"])))  # noqa: E731
    grouped = []
    for _, group in groupby(sorted(items, key=key), key=key):
        group = list(group)
        grouped += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return grouped


def summary_table(records: list[dict]) -> str:
    """Images judged Available, images by most probable class (the defects found), failures."""
    judged = [r for r in records if "label" in r]
    labels = Counter(r["label"] for r in judged)
    lines = [f"{'':<24}{'images':>7}", f"{'judged Available':<24}{sum(r['available'] for r in judged):>7}",
             "most probable class:"]
    lines += [f"  {name:<22}{labels.get(name, 0):>7}" for name in CLASS_NAMES]
    lines.append(f"{'failed':<24}{len(records) - len(judged):>7}")
    return "\n".join(lines)


@click.command()
@url_option
@security_options
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0), help="Retries while UNAVAILABLE.")
@click.option("--images", required=True, type=click.Path(exists=True, path_type=Path),
              help="A folder of images, or a JSONL file of {\"image\": path, \"id\"?, \"product\"?, \"caption\"?}.")
@click.option("--product", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The product cut-out the images show (PNG/WebP with alpha).")
@click.option("--caption", default="", help="Product title, RFNet's text input.")
@click.option("--threshold", type=click.FloatRange(0, 1), help=f"p(Available) needed [server default: {JUDGE_THRESHOLD}].")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, JUDGE_MAX_IMAGES),
              help="Images per request.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="verdicts.jsonl to write.")
@click.option("--deadline", "deadline_s", type=float, default=120.0, show_default=True, help="Seconds per request.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
def judge(url, security, retries, images, product, caption, threshold, batch_size, out, deadline_s, progress) -> None:
    """Judge ad images with RFNet (the rfad_judge model); one verdict line per image in OUT; exit 1 if any failed."""
    from tqdm import tqdm

    items = read_items(images, product, caption)
    records = []
    bar = tqdm(total=len(items), unit="img", desc="rfad judge", disable=not progress, file=sys.stderr)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with RfadClient(url, retries=retries, **security) as client, open(out, "w", encoding="utf-8") as sink:
            for group in batches(items, batch_size):
                try:
                    result = client.judge([item["image"] for item in group], group[0]["product"], group[0]["caption"],
                                          threshold=threshold, deadline_s=deadline_s)
                    rows = [{"id": item["id"], "image": str(item["image"]), **verdict}
                            for item, verdict in zip(group, result.verdicts())]
                except RfadClientError as exc:
                    error = f"{exc.status}: {exc}" if exc.status else str(exc)
                    rows = [{"id": item["id"], "image": str(item["image"]), "error": " ".join(error.split())}
                            for item in group]
                for row in rows:  # written per request, so an interrupted run keeps what it has
                    sink.write(json.dumps(row) + "\n")
                sink.flush()
                records += rows
                bar.update(len(group))
    except OSError as exc:
        raise click.ClickException(f"--out {out}: {exc}") from None
    finally:
        bar.close()
    click.echo(summary_table(records))
    failed = [r for r in records if "error" in r]
    click.echo(f"{len(records)} image(s), {len(failed)} failed; verdicts in {out}")
    if failed:
        click.echo(f"first failure: {failed[0]['id']}: {failed[0]['error']}", err=True)
        sys.exit(1)
