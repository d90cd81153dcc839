"""The gRPC client of ``rfad_pipeline`` for ad systems (no torch, no diffusers).

Requests are built from the contract in :mod:`rfad.contract` (names, datatypes, limits) and
validated locally before they are sent; the server validates again. Retries with exponential
backoff happen only when the server is UNAVAILABLE (down or restarting), never for a bad
request or a server-side failure.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfad.contract import (
    CLASS_NAMES,
    MAX_IMAGE_BYTES,
    PIPELINE_INPUTS,
    PIPELINE_MODEL,
    check_number,
    check_text,
)

_NUMPY = {"BYTES": np.object_, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}


class RfadClientError(RuntimeError):
    """A request failed; ``status`` is the gRPC status name (e.g. INVALID_ARGUMENT)."""

    def __init__(self, message: str, status: str = ""):
        super().__init__(message)
        self.status = status


class InvalidRequestError(RfadClientError):
    """The request is invalid (checked locally or by the server): the message names the field."""


class UnavailableError(RfadClientError):
    """The server could not be reached (after the configured retries)."""


class DeadlineExceededError(RfadClientError):
    """The request took longer than its deadline; the server stops working on it."""


class ServerError(RfadClientError):
    """The server failed while processing the request (the message names the component)."""


@dataclass
class Result:
    """What one generation request returned. ``images`` are PNG bytes, Available ones first."""

    images: list[bytes]
    available: list[bool]
    probabilities: list[list[float]]
    seeds: list[int]
    attempts: int
    latency_s: float

    def verdicts(self) -> list[dict[str, float]]:
        return [dict(zip(CLASS_NAMES, p)) for p in self.probabilities]

    def save(self, folder: str | os.PathLike, stem: str = "image") -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, data in enumerate(self.images):
            path = folder / f"{stem}-{i}.png"
            path.write_bytes(data)
            paths.append(path)
        return paths


def _product_bytes(product) -> bytes:
    if isinstance(product, (bytes, bytearray)):
        data = bytes(product)
    elif isinstance(product, (str, os.PathLike)):
        data = Path(product).read_bytes()
    elif hasattr(product, "save"):  # a PIL image
        buffer = io.BytesIO()
        product.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise InvalidRequestError(f"product_image: expected a path, bytes or PIL image, got {type(product).__name__}")
    if not data:
        raise InvalidRequestError("product_image: empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(f"product_image: {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES}")
    return data


def build_inputs(product, prompt: str, caption: str = "", negative_prompt: str = "", **settings) -> dict:
    """Validated request values by contract name (numpy arrays), settings left out when None."""
    from rfad.contract import InvalidRequest

    try:
        values = {"product_image": _product_bytes(product), "prompt": check_text("prompt", prompt, allow_empty=False),
                  "caption": check_text("caption", caption), "negative_prompt": check_text("negative_prompt",
                                                                                           negative_prompt)}
        for field in PIPELINE_INPUTS:
            if field.name in settings and settings[field.name] is not None:
                values[field.name] = check_number(field.name, settings[field.name],
                                                  integer=field.datatype in ("INT32", "INT64"))
    except InvalidRequest as exc:
        raise InvalidRequestError(str(exc), "INVALID_ARGUMENT") from None
    unknown = set(settings) - {f.name for f in PIPELINE_INPUTS}
    if unknown:
        raise InvalidRequestError(f"unknown settings {sorted(unknown)}")
    arrays = {}
    for field in PIPELINE_INPUTS:
        if field.name in values:
            value = values[field.name]
            if field.datatype == "BYTES":
                value = value if isinstance(value, bytes) else value.encode("utf-8")
            arrays[field.name] = (field.datatype, np.array([value], dtype=_NUMPY[field.datatype]))
    return arrays


def _error(exc) -> RfadClientError:
    status = str(exc.status() or "").replace("StatusCode.", "")
    message = exc.message() if hasattr(exc, "message") else str(exc)
    kind = {"INVALID_ARGUMENT": InvalidRequestError, "UNAVAILABLE": UnavailableError,
            "DEADLINE_EXCEEDED": DeadlineExceededError}.get(status, ServerError)
    return kind(message, status)


class RfadClient:
    """``url`` is host:port of Triton's gRPC endpoint."""

    def __init__(self, url: str = "127.0.0.1:8001", retries: int = 3, backoff_s: float = 0.5):
        import tritonclient.grpc as grpcclient

        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url)

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=2.0))
        except Exception:  # unreachable counts as not ready
            return False

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise UnavailableError(f"{self.url} not ready after {timeout_s:.0f} s", "UNAVAILABLE")
            time.sleep(0.25)

    def generate(self, product, prompt: str, caption: str = "", negative_prompt: str = "",
                 deadline_s: float | None = None, **settings) -> Result:
        """Generate ad images for ``product``; ``settings`` are the contract's numeric fields
        (seed, steps, guidance_scale, controlnet_scale, candidates, max_attempts, num_images, threshold)."""
        from tritonclient.utils import InferenceServerException

        arrays = build_inputs(product, prompt, caption, negative_prompt, **settings)
        inputs = []
        for name, (datatype, array) in arrays.items():
            tensor = self._grpc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                response = self._client.infer(PIPELINE_MODEL, inputs, client_timeout=deadline_s)
                break
            except InferenceServerException as exc:
                error = _error(exc)
                if isinstance(error, UnavailableError) and attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
                    attempt += 1
                    continue
                raise error from None
        latency = time.perf_counter() - start
        return Result(
            images=[bytes(b) for b in response.as_numpy("images")],
            available=[bool(a) for a in response.as_numpy("available")],
            probabilities=response.as_numpy("probabilities").astype(float).tolist(),
            seeds=[int(s) for s in response.as_numpy("seeds")],
            attempts=int(response.as_numpy("attempts")[0]),
            latency_s=latency,
        )
