"""Turn a served request's tensors into a validated generation request, and a result into tensors.

The ``rfad_pipeline`` BLS model calls these two functions and nothing else about the contract,
so every check a request goes through is here, testable without Triton: a missing input, a
wrong shape, text that is not UTF-8 or too long, an image over the byte limit, a setting out
of range -- each an :class:`rfad.contract.InvalidRequest` naming the field and the limit, which
the model returns as INVALID_ARGUMENT.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from rfad.contract import (
    CLASS_NAMES,
    DEFAULT_LIMITS,
    MAX_IMAGE_BYTES,
    PIPELINE_INPUTS,
    SETTINGS_INPUTS,
    InvalidRequest,
    Limits,
    TensorField,
    check_number,
    check_text,
)


@dataclass(frozen=True)
class PipelineRequest:
    """A validated request: the encoded product image, texts and settings values (by field name)."""

    product_image: bytes
    prompt: str
    negative_prompt: str
    caption: str
    settings: dict


def _single(field: TensorField, value: np.ndarray) -> object:
    array = np.asarray(value)
    if array.size != 1:
        raise InvalidRequest(f"{field.name}: expected exactly one value (shape {list(field.shape)}), got shape "
                             f"{list(array.shape)}")
    return array.reshape(-1)[0]


def _text(field: TensorField, value: np.ndarray, limits: Limits) -> str:
    item = _single(field, value)
    if isinstance(item, str):
        text = item
    else:
        try:
            text = bytes(item).decode("utf-8")
        except (UnicodeDecodeError, TypeError) as exc:
            raise InvalidRequest(f"{field.name}: not valid UTF-8 text") from exc
    return check_text(field.name, text, limits, allow_empty=field.optional)


def parse_pipeline_request(inputs: Mapping[str, np.ndarray | None], limits: Limits = DEFAULT_LIMITS) -> PipelineRequest:
    """``inputs``: tensor name -> numpy array (None or absent for an optional input not sent).

    Returns the request with settings values checked against ``limits`` (the
    :class:`rfad.pipeline.settings.GenerationSettings` built from them checks again).
    """
    fields = {field.name: field for field in PIPELINE_INPUTS}
    unknown = sorted(set(inputs) - set(fields))
    if unknown:
        raise InvalidRequest(f"unknown input(s) {unknown}; expected {sorted(fields)}")
    values: dict[str, object] = {}
    for name, field in fields.items():
        value = inputs.get(name)
        if value is None:
            if not field.optional:
                raise InvalidRequest(f"{name}: required input is missing")
            continue
        if field.datatype == "BYTES":
            if name == "product_image":
                item = _single(field, value)
                data = bytes(item) if not isinstance(item, str) else item.encode("latin-1")
                if not data:
                    raise InvalidRequest("product_image: empty")
                if len(data) > MAX_IMAGE_BYTES:
                    raise InvalidRequest(f"product_image: {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES}")
                values[name] = data
            else:
                values[name] = _text(field, value, limits)
        else:
            item = _single(field, value)
            number = item.item() if hasattr(item, "item") else item
            integer = field.datatype in ("INT32", "INT64")
            values[name] = check_number(name, number, limits, integer=integer)
    return PipelineRequest(
        product_image=values["product_image"],
        prompt=values["prompt"],
        negative_prompt=values.get("negative_prompt", ""),
        caption=values.get("caption", ""),
        settings={name: values[name] for name in SETTINGS_INPUTS if name in values},
    )


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (lossless at every ``compress_level``, 0 = stored, 9 = smallest)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def build_pipeline_response(result) -> dict[str, np.ndarray]:
    """A :class:`rfad.pipeline.generate.GenerationResult` -> output tensors by contract name.

    Images that were not judged (no judge) carry NaN probabilities and ``available`` False. The
    ``screened_*`` outputs list the candidates early screening replaced (empty when it is off).
    """
    images = result.images
    probabilities = np.full((len(images), len(CLASS_NAMES)), np.nan, dtype=np.float32)
    for i, candidate in enumerate(images):
        if candidate.probabilities is not None:
            probabilities[i] = candidate.probabilities
    return {
        "images": np.array([encode_png(c.image) for c in images], dtype=np.object_),
        "available": np.array([bool(c.available) for c in images], dtype=np.bool_),
        "probabilities": probabilities,
        "seeds": np.array([c.seed for c in images], dtype=np.int64),
        "attempts": np.array([result.attempts], dtype=np.int32),
        "screened_seeds": np.array([c.seed for c in result.screened], dtype=np.int64),
        "screened_steps": np.array([c.step for c in result.screened], dtype=np.int32),
        "screened_p": np.array([c.p_available for c in result.screened], dtype=np.float32),
    }
