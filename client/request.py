"""Building ``rfad_pipeline`` requests: the product image's bytes, locally validated settings, and
tensors shaped and typed as the contract (:mod:`rfad.contract`) declares.

A bad field is refused here, before any network round trip, with the message the server would
give: the settings go through :class:`rfad.pipeline.settings.GenerationSettings` (torch-free),
the very check the server applies, with unset fields at the server's defaults.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rfad.client.errors import invalid_request
from rfad.contract import MAX_IMAGE_BYTES, PIPELINE_INPUTS, SETTINGS_INPUTS, InvalidRequest, TensorField, check_text
from rfad.pipeline.settings import GenerationSettings

# numpy dtype of each Triton datatype the contract uses (BYTES travel as object arrays of bytes).
_NUMPY_DTYPES = {"BYTES": np.object_, "BOOL": np.bool_, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}

# The text inputs (generate() arguments of the same names) and whether each may be empty.
_TEXT_INPUTS = {"prompt": False, "negative_prompt": True, "caption": True}


def product_bytes(product, field: str = "product_image") -> bytes:
    """The encoded image from a path, bytes or a PIL image (encoded as PNG), within the size limit;
    errors name ``field``."""
    pil_image = sys.modules.get("PIL.Image")  # a PIL image can only exist if PIL was imported: never import it here
    if isinstance(product, (bytes, bytearray, memoryview)):
        data = bytes(product)
    elif isinstance(product, (str, os.PathLike)):
        path = Path(product)
        if not path.is_file():
            raise invalid_request(f"{field}: no such file: {path}")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise invalid_request(f"{field}: {path} has {path.stat().st_size} bytes, over the limit of "
                                  f"{MAX_IMAGE_BYTES}")
        data = path.read_bytes()
    elif pil_image is not None and isinstance(product, pil_image.Image):
        buffer = io.BytesIO()
        product.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise invalid_request(f"{field}: expected a path, bytes or a PIL image, got {type(product).__name__}")
    if not data:
        raise invalid_request(f"{field}: empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise invalid_request(f"{field}: {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES}")
    return data


def build_request(product, prompt: str, caption: str = "", negative_prompt: str = "",
                  **settings) -> dict[str, np.ndarray]:
    """The validated request tensors by contract input name, each shaped and typed as the contract says.

    ``settings`` are the contract's numeric inputs (``SETTINGS_INPUTS``); None leaves one out,
    so the server applies its default. Raises :class:`InvalidRequestError` naming the field.
    """
    unknown = sorted(set(settings) - set(SETTINGS_INPUTS))
    if unknown:
        raise invalid_request(f"{', '.join(unknown)}: not a request field (settings are {', '.join(SETTINGS_INPUTS)})")
    by_name = {spec.name: spec for spec in PIPELINE_INPUTS}
    values: dict[str, object] = {"product_image": product_bytes(product)}
    texts = {"prompt": prompt, "negative_prompt": negative_prompt, "caption": caption}
    given = {name: value for name, value in settings.items() if value is not None}
    try:
        for name, allow_empty in _TEXT_INPUTS.items():
            text = check_text(name, texts[name], allow_empty=allow_empty)
            if text or not by_name[name].optional:  # an empty optional text is the server's default anyway
                values[name] = text.encode("utf-8")
        # The server's own check: each value within its limits, and the settings together (the
        # candidates' seeds stay within INT64), unset fields at the server's defaults.
        checked = GenerationSettings(**given)
    except InvalidRequest as exc:
        raise invalid_request(str(exc)) from None
    values.update({name: getattr(checked, name) for name in given})
    tensors = {}
    for spec in PIPELINE_INPUTS:  # contract order, so requests are built the same way every time
        if spec.name in values:
            # Every input is one value; reshaping to the contract's shape fails loudly should
            # the contract ever declare an input of another size.
            tensors[spec.name] = np.array([values[spec.name]], dtype=_NUMPY_DTYPES[spec.datatype]).reshape(spec.shape)
    missing = [spec.name for spec in PIPELINE_INPUTS if not spec.optional and spec.name not in tensors]
    if missing:  # only reachable if the contract gains a required input this builder does not fill
        raise invalid_request(f"{', '.join(missing)}: required")
    return tensors


def infer_inputs(tensors: Mapping[str, np.ndarray], grpc_module, fields: tuple[TensorField, ...] = PIPELINE_INPUTS) -> list:
    """``grpc_module.InferInput`` objects (tritonclient.grpc or .aio) for ``tensors`` from :func:`build_request`
    (or, with ``fields=JUDGE_INPUTS``, :func:`rfad.client.judge.build_judge_request`)."""
    datatypes = {spec.name: spec.datatype for spec in fields}
    inputs = []
    for name, array in tensors.items():
        tensor = grpc_module.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs
