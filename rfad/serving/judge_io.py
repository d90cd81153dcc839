"""The ``rfad_judge`` endpoint's request handling: checked inputs in, component tensors out, verdicts.

The ensemble's two python steps call these functions and nothing else about the contract, so
every check is testable without Triton:

- :func:`parse_judge_request` checks the request tensors (count, byte limits, UTF-8, the
  threshold's range); each problem is an :class:`rfad.contract.InvalidRequest` naming the
  field and, for a bad image, its index in the batch;
- :func:`judge_tensors` decodes the images and builds exactly what the pipeline's own judge
  (:class:`rfad.pipeline.judge.RunnerJudge`) feeds the component models: generated images and
  I_o (the product placed on a canvas of the images' size, as the pipeline places it) in
  [0, 1], resized to the judge's working size, the caption's token ids and mask; one row per image.
  Only the rows the resize reads are ever made into arrays (:func:`rfad.pipeline.judge_view.resize_rows`):
  the endpoint's memory per request is one decoded ad in PIL's buffer, not three 4096-px arrays;
- :func:`verdicts` turns probabilities into Available flags.

The caption is tokenised once and repeated per image, so ``rfnet_text`` encodes N copies: an
ensemble cannot broadcast one embedding to N rows, and a step that would costs a python hop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np

from rfad import heap
from rfad.canvas import CanvasError, CanvasSpec, ad_image_rows, canvas_from_dict, placed_rows
from rfad.contract import (
    DEFAULT_LIMITS,
    JUDGE_INPUTS,
    JUDGE_MAX_IMAGES,
    JUDGE_THRESHOLD,
    MAX_IMAGE_BYTES,
    InvalidRequest,
    check_text,
)
from rfad.pipeline.tokens import tokenize_caption
from rfad.pipeline.judge_view import resize_rows


@dataclass(frozen=True)
class JudgeRequest:
    images: list[bytes]  # encoded generated images
    product_image: bytes
    caption: str
    threshold: float


def _bytes_item(item) -> bytes:
    return item.encode("latin-1") if isinstance(item, str) else bytes(item)


def _checked_image_bytes(name: str, item) -> bytes:
    data = _bytes_item(item)
    if not data:
        raise InvalidRequest(f"{name}: empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"{name}: {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES}")
    return data


def parse_judge_request(inputs: Mapping[str, np.ndarray | None]) -> JudgeRequest:
    """``inputs``: tensor name -> numpy array (None or absent for an optional input not sent)."""
    fields = {field.name: field for field in JUDGE_INPUTS}
    unknown = sorted(set(inputs) - set(fields))
    if unknown:
        raise InvalidRequest(f"unknown input(s) {unknown}; expected {sorted(fields)}")
    for name, field in fields.items():
        if inputs.get(name) is None and not field.optional:
            raise InvalidRequest(f"{name}: required input is missing")
    generated = np.asarray(inputs["generated_image"]).reshape(-1)
    if not 1 <= generated.size <= JUDGE_MAX_IMAGES:
        raise InvalidRequest(f"generated_image: {generated.size} images; send 1 to {JUDGE_MAX_IMAGES} per request")
    images = [_checked_image_bytes(f"generated_image[{i}]", item) for i, item in enumerate(generated)]
    product = np.asarray(inputs["product_image"]).reshape(-1)
    if product.size != 1:
        raise InvalidRequest(f"product_image: expected exactly one image, got {product.size}")
    caption = ""
    if inputs.get("caption") is not None:
        value = np.asarray(inputs["caption"]).reshape(-1)
        if value.size != 1:
            raise InvalidRequest(f"caption: expected exactly one text, got {value.size}")
        try:
            caption = value[0] if isinstance(value[0], str) else bytes(value[0]).decode("utf-8")
        except (UnicodeDecodeError, TypeError) as exc:
            raise InvalidRequest("caption: not valid UTF-8 text") from exc
        check_text("caption", caption)
    threshold = JUDGE_THRESHOLD
    if inputs.get("threshold") is not None:
        value = np.asarray(inputs["threshold"]).reshape(-1)
        if value.size != 1:
            raise InvalidRequest(f"threshold: expected exactly one value, got {value.size}")
        threshold = float(value[0])
        low, high = DEFAULT_LIMITS.threshold
        if not math.isfinite(threshold) or not low <= threshold <= high:
            raise InvalidRequest(f"threshold: {threshold!r} is outside the allowed range [{low}, {high}]")
    return JudgeRequest(images, _checked_image_bytes("product_image", product[0]), caption, threshold)


def _to_unit(width: int, height: int, read_rows, size: int) -> np.ndarray:
    """An image read by rows (``read_rows(rows)`` -> uint8 [len(rows), W, 3]) -> float32 [3, size, size]
    in [0, 1]: the judge's resize (rfad.pipeline.judge_view) and the pipeline's image_to_tensor
    scaling. Resized from the uint8 pixels (the same values up to float rounding, as both steps are
    linear) and from the rows the resize reads only, so a 4096-px image never exists as one array."""
    resized = resize_rows(lambda rows: read_rows(rows).transpose(2, 0, 1), height, size)
    return np.ascontiguousarray(resized / np.float32(255.0), dtype=np.float32)


def product_view(product_image, width: int, height: int, spec: CanvasSpec = CanvasSpec()):
    """I_o for ads of ``width`` x ``height``, read by rows: ``(canvas_w, canvas_h, read_rows)`` of the
    product placed as the pipeline places it on a canvas of that size (``read_rows(rows)`` -> uint8
    [len(rows), canvas_w, 3]). The canvas needs sides that are multiples of 8 (and at least 64);
    other sizes get the nearest such canvas, which the judge's resize then brings to its working
    size like any ad."""
    canvas_w, canvas_h = max(64, width // 8 * 8), max(64, height // 8 * 8)
    return placed_rows(product_image, replace(spec, width=canvas_w, height=canvas_h))


CANVAS_FILE = "canvas.json"  # in rfad_judge_prepare's assets: the models' declared canvas (may be {})


def declared_spec(assets) -> CanvasSpec:
    """The placement of the repository's models (``assets/canvas.json``, written by ``rfad-export
    triton-repo`` from the export manifest); CanvasSpec's defaults where none is declared."""
    path = Path(assets) / CANVAS_FILE
    values = json.loads(path.read_text()) if path.is_file() else {}
    return canvas_from_dict(values, str(path))


_TRIM_PIXELS = 2**22  # 4 megapixels: a decoded image of 16 MiB and more is in Pillow's 16 MiB blocks


def _release(size: tuple[int, int] | None) -> None:
    """After a large image, hand its freed blocks back to the OS (rfad.heap: glibc keeps them
    resident otherwise, and the next image's peak would stack on them)."""
    if size is not None and size[0] * size[1] >= _TRIM_PIXELS:
        heap.trim()


def judge_tensors(request: JudgeRequest, tokenizer, size: int, spec: CanvasSpec = CanvasSpec()) -> dict[str, np.ndarray]:
    """The component inputs for ``request``'s N images, by the roles of rfnet's and rfnet_text's inputs:

    generated_image, product_image float32 [N, 3, size, size] in [0, 1] (``size``: the judge's,
    :attr:`rfad.components.specs.ModelFacts.judge_size`); input_ids, attention_mask int64 [N, L]
    (the caption, tokenised by :func:`rfad.pipeline.tokens.tokenize_caption`). Each image is
    decoded and resized on its own, reading only the rows the resize touches, so a request holds
    one decoded image at a time, in PIL's buffer.
    """
    generated, first = [], None
    for i, data in enumerate(request.images):
        try:
            with ad_image_rows(data, spec.max_pixels, spec.min_side, label=f"generated_image[{i}]") as image:
                first = first or image[:2]
                if image[:2] != first:
                    raise InvalidRequest(f"generated_image[{i}]: {image[0]}x{image[1]} px, but generated_image[0] "
                                         f"is {first[0]}x{first[1]}; send images of one size per request")
                generated.append(_to_unit(*image, size))
        except CanvasError as exc:
            raise InvalidRequest(str(exc)) from None
        finally:
            _release(first)
    try:
        product = _to_unit(*product_view(request.product_image, *first, spec), size)
    except CanvasError as exc:
        raise InvalidRequest(str(exc)) from None
    finally:
        _release(first)
    ids, mask = tokenize_caption(tokenizer, request.caption, return_tensors="np")
    n = len(generated)
    return {
        "generated_image": np.stack(generated),
        "product_image": np.repeat(product[None], n, axis=0),
        "input_ids": np.repeat(ids.astype(np.int64), n, axis=0),
        "attention_mask": np.repeat(mask.astype(np.int64), n, axis=0),
    }


def verdicts(probabilities: np.ndarray, threshold: float = JUDGE_THRESHOLD) -> np.ndarray:
    """float [N, 5] (column 0 = Available) -> bool [N]: p(Available) >= threshold, as the pipeline decides."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2 or probabilities.shape[1] < 1:
        raise ValueError(f"probabilities: expected [N, 5], got shape {list(probabilities.shape)}")
    return probabilities[:, 0].astype(np.float64) >= threshold
