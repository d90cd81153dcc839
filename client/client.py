"""The gRPC client of the served ``rfad_pipeline`` model, for ad systems (no torch, no diffusers).

Requests are built from the contract in :mod:`rfad.contract` (tensor names, datatypes, shapes,
limits) and validated locally before they are sent, so a bad field is reported without a round
trip; the server validates again. Errors are :class:`RfadClientError` subclasses that carry the
gRPC status and the server's message. Only UNAVAILABLE (server down or restarting) is retried,
with exponential backoff; a bad request or a server-side failure would fail the same way again.

:class:`RfadClient` is blocking (tritonclient.grpc, thread-safe for ``generate``);
:class:`AsyncRfadClient` has the same API over tritonclient.grpc.aio.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from rfad.contract import (
    CLASS_NAMES,
    JUDGE_INPUTS,
    JUDGE_MODEL,
    JUDGE_OUTPUTS,
    MAX_IMAGE_BYTES,
    PIPELINE_INPUTS,
    PIPELINE_MODEL,
    PIPELINE_OUTPUTS,
    SETTINGS_INPUTS,
    InvalidRequest,
    TensorField,
    check_number,
    check_text,
)

if TYPE_CHECKING:  # rfad.client.judge imports this module
    from rfad.client.judge import JudgeResult

DEFAULT_URL = "127.0.0.1:8001"

# numpy dtype of each Triton datatype the contract uses (BYTES travel as object arrays of bytes).
_NUMPY_DTYPES = {"BYTES": np.object_, "BOOL": np.bool_, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}

# The text inputs (generate() arguments of the same names) and whether each may be empty.
_TEXT_INPUTS = {"prompt": False, "negative_prompt": True, "caption": True}


# --- Errors --------------------------------------------------------------------------------------

class RfadClientError(RuntimeError):
    """A request failed. ``status`` is the gRPC status name (e.g. ``INVALID_ARGUMENT``; '' when none
    applies); ``local`` is True when the client refused the request before sending it."""

    def __init__(self, message: str, status: str = "", local: bool = False):
        super().__init__(message)
        self.status = status
        self.local = local

    @property
    def message(self) -> str:
        return str(self)


class InvalidRequestError(RfadClientError):
    """The request is invalid (checked locally or by the server); the message names the field."""


class ServerError(RfadClientError):
    """The server failed while processing the request (INTERNAL, NOT_FOUND, ...); the message is the server's."""


class UnavailableError(RfadClientError):
    """The server could not be reached, also after the configured retries."""


class DeadlineExceededError(RfadClientError):
    """The request did not finish within its deadline; the server abandons it."""


_ERRORS_BY_STATUS = {"INVALID_ARGUMENT": InvalidRequestError, "UNAVAILABLE": UnavailableError,
                     "DEADLINE_EXCEEDED": DeadlineExceededError}


def error_from_exception(exc: Exception) -> RfadClientError:
    """The :class:`RfadClientError` for a tritonclient ``InferenceServerException``."""
    status = str(exc.status() or "") if hasattr(exc, "status") else ""
    status = status.removeprefix("StatusCode.")
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return _ERRORS_BY_STATUS.get(status, ServerError if status else RfadClientError)(message or status, status)


# --- Result --------------------------------------------------------------------------------------

@dataclass
class Result:
    """What one generation request returned.

    One entry per returned image in every list, Available images first: ``images`` are PNG
    bytes, ``available`` the verdicts, ``probabilities`` the class probabilities in
    :attr:`class_names` order, ``seeds`` the seed of each image. ``attempts`` is the number of
    attempts the server used; ``latency_s`` the round trip seen by the client.
    """

    images: list[bytes]
    available: list[bool]
    probabilities: list[list[float]]
    seeds: list[int]
    attempts: int
    latency_s: float = 0.0
    class_names: ClassVar[tuple[str, ...]] = CLASS_NAMES

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray], latency_s: float = 0.0) -> "Result":
        """Build a result from the response tensors named by ``PIPELINE_OUTPUTS``; raises
        :class:`ServerError` when one is missing or their lengths disagree."""
        values = {}
        for spec in PIPELINE_OUTPUTS:
            array = outputs.get(spec.name)
            if array is None:
                raise ServerError(f"the response lacks the output {spec.name!r}", "INTERNAL")
            values[spec.name] = _from_array(spec, np.asarray(array))
        result = cls(**values, latency_s=latency_s)
        count = len(result.images)
        if any(len(getattr(result, name)) != count for name in ("available", "probabilities", "seeds")) or any(
                len(row) != len(CLASS_NAMES) for row in result.probabilities):
            raise ServerError(f"malformed response: {count} images, {len(result.available)} verdicts, "
                              f"{len(result.seeds)} seeds, probability rows of "
                              f"{sorted({len(r) for r in result.probabilities})} values", "INTERNAL")
        return result

    def verdicts(self) -> list[dict[str, float]]:
        """Per image, the probability of each class by name."""
        return [dict(zip(self.class_names, row)) for row in self.probabilities]

    @property
    def labels(self) -> list[str]:
        """Per image, the most probable class name."""
        return [self.class_names[int(np.argmax(row))] for row in self.probabilities]

    @property
    def best_index(self) -> int | None:
        """Index of the best image: the Available one with the highest p(Available), else the
        highest p(Available) of all; None when no image was returned."""
        if not self.images:
            return None
        return max(range(len(self.images)), key=lambda i: (self.available[i], self.probabilities[i][0]))

    @property
    def best(self) -> bytes | None:
        """PNG bytes of the image at :attr:`best_index` (None when no image was returned)."""
        index = self.best_index
        return None if index is None else self.images[index]

    def save(self, folder: str | os.PathLike, stem: str = "image") -> list[Path]:
        """Write ``folder/{stem}-{i}.png`` for every image; returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, data in enumerate(self.images):
            path = folder / f"{stem}-{i}.png"
            path.write_bytes(data)
            paths.append(path)
        return paths

    def summary(self) -> dict:
        """Everything but the image bytes, JSON-ready."""
        return {"available": self.available, "labels": self.labels, "probabilities": self.verdicts(),
                "seeds": self.seeds, "attempts": self.attempts, "best": self.best_index,
                "latency_s": round(self.latency_s, 4)}


def _from_array(spec: TensorField, array: np.ndarray):
    """One output tensor as Python values: a scalar for shape (1,), else a (nested) list."""
    if spec.datatype == "BYTES":
        values = [bytes(v) for v in array.reshape(-1)]
    elif spec.datatype == "BOOL":
        values = [bool(v) for v in array.reshape(-1)]
    elif spec.datatype.startswith("INT"):
        values = [int(v) for v in array.reshape(-1)]
    else:
        values = array.astype(float).tolist() if len(spec.shape) > 1 else [float(v) for v in array.reshape(-1)]
    if spec.shape == (1,):
        if len(values) != 1:
            raise ServerError(f"output {spec.name!r}: expected one value, got {len(values)}", "INTERNAL")
        return values[0]
    return values


# --- Requests ------------------------------------------------------------------------------------

def product_bytes(product, field: str = "product_image") -> bytes:
    """The encoded image from a path, bytes or a PIL image (encoded as PNG), within the size limit;
    errors name ``field``."""
    pil_image = sys.modules.get("PIL.Image")  # a PIL image can only exist if PIL was imported: never import it here
    if isinstance(product, (bytes, bytearray, memoryview)):
        data = bytes(product)
    elif isinstance(product, (str, os.PathLike)):
        path = Path(product)
        if not path.is_file():
            raise InvalidRequestError(f"{field}: no such file: {path}", "INVALID_ARGUMENT", local=True)
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise InvalidRequestError(f"{field}: {path} has {path.stat().st_size} bytes, over the limit of "
                                      f"{MAX_IMAGE_BYTES}", "INVALID_ARGUMENT", local=True)
        data = path.read_bytes()
    elif pil_image is not None and isinstance(product, pil_image.Image):
        buffer = io.BytesIO()
        product.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise InvalidRequestError(f"{field}: expected a path, bytes or a PIL image, got "
                                  f"{type(product).__name__}", "INVALID_ARGUMENT", local=True)
    if not data:
        raise InvalidRequestError(f"{field}: empty", "INVALID_ARGUMENT", local=True)
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(f"{field}: {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES}",
                                  "INVALID_ARGUMENT", local=True)
    return data


def build_request(product, prompt: str, caption: str = "", negative_prompt: str = "",
                  **settings) -> dict[str, np.ndarray]:
    """The validated request tensors by contract input name, each shaped and typed as the contract says.

    ``settings`` are the contract's numeric inputs (``SETTINGS_INPUTS``); None leaves one out,
    so the server applies its default. Raises :class:`InvalidRequestError` naming the field.
    """
    by_name = {spec.name: spec for spec in PIPELINE_INPUTS}
    unknown = sorted(set(settings) - set(SETTINGS_INPUTS))
    if unknown:
        raise InvalidRequestError(f"{', '.join(unknown)}: not a request field (settings are "
                                  f"{', '.join(SETTINGS_INPUTS)})", "INVALID_ARGUMENT", local=True)
    values: dict[str, object] = {"product_image": product_bytes(product)}
    texts = {"prompt": prompt, "negative_prompt": negative_prompt, "caption": caption}
    try:
        for name, allow_empty in _TEXT_INPUTS.items():
            text = check_text(name, texts[name], allow_empty=allow_empty)
            if text or not by_name[name].optional:  # an empty optional text is the server's default anyway
                values[name] = text.encode("utf-8")
        for name in SETTINGS_INPUTS:
            if settings.get(name) is not None:
                values[name] = check_number(name, settings[name],
                                            integer=by_name[name].datatype.startswith("INT"))
    except InvalidRequest as exc:
        raise InvalidRequestError(str(exc), "INVALID_ARGUMENT", local=True) from None
    tensors = {}
    for spec in PIPELINE_INPUTS:  # contract order, so requests are built the same way every time
        if spec.name in values:
            # Every input is one value; reshaping to the contract's shape fails loudly should
            # the contract ever declare an input of another size.
            tensors[spec.name] = np.array([values[spec.name]], dtype=_NUMPY_DTYPES[spec.datatype]).reshape(spec.shape)
    missing = [spec.name for spec in PIPELINE_INPUTS if not spec.optional and spec.name not in tensors]
    if missing:  # only reachable if the contract gains a required input this builder does not fill
        raise InvalidRequestError(f"{', '.join(missing)}: required", "INVALID_ARGUMENT", local=True)
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


def _tritonclient(module: str):
    """Import a tritonclient module, saying how to install it when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f'rfad.client needs {module}: pip install "tritonclient[grpc]" ({exc})') from exc


def _channel_args(backoff_s: float) -> list[tuple[str, int]]:
    """gRPC channel options: tritonclient's unlimited message sizes, and a reconnect backoff
    no longer than ours. gRPC's own backoff grows to 120 s; a retry made while the channel
    waits out that backoff fails at once, even when the server is already back."""
    grpcclient = _tritonclient("tritonclient.grpc")
    reconnect_ms = int(min(max(backoff_s, 0.1), 5.0) * 1000)
    return [("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms)]


@dataclass
class _RetryPolicy:
    """Retries of UNAVAILABLE with exponential backoff inside one overall deadline."""

    retries: int
    backoff_s: float
    deadline_s: float | None
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline); raises once it has passed."""
        if self.deadline_s is None:
            return None
        left = self.deadline_s - (time.monotonic() - self.start)
        if left <= 0:
            raise DeadlineExceededError(f"deadline of {self.deadline_s:g} s exceeded", "DEADLINE_EXCEEDED")
        return left

    def delay(self, error: RfadClientError, attempt: int, url: str) -> float:
        """Seconds to wait before retry number ``attempt + 1``, or raise ``error`` when it must not be retried."""
        if not isinstance(error, UnavailableError):
            raise error
        if attempt >= self.retries:
            raise UnavailableError(f"{url} unavailable after {attempt + 1} attempt(s): {error}", error.status)
        wait = self.backoff_s * 2 ** attempt
        left = self.remaining()
        if left is not None and wait >= left:
            raise UnavailableError(f"{url} unavailable, and the deadline of {self.deadline_s:g} s leaves no time "
                                   f"for another retry: {error}", error.status)
        return wait


def _health_state(url: str, model: str) -> dict:
    return {"url": url, "live": False, "ready": False, "model": model, "model_ready": False, "server_version": "",
            "error": ""}


def _health_error(exc: Exception) -> str:
    error = error_from_exception(exc)
    return f"{error.status or 'error'}: {error}"


def _finish_health(state: dict) -> dict:
    if not state["error"] and not state["model_ready"]:
        state["error"] = f"model {state['model']} is not ready" if state["ready"] else "server is not ready"
    return state


class RfadClient:
    """Blocking client of ``rfad_pipeline`` at ``url`` (host:port of Triton's gRPC endpoint).

    ``timeout_s`` is the default deadline of a request (None: no deadline), overridden per
    call by ``deadline_s``; retries of UNAVAILABLE count against the same deadline. ``retries``
    is how many times an UNAVAILABLE request is retried, waiting ``backoff_s``, 2x, 4x, ...
    between tries. Safe to share between threads for ``generate``.
    """

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float | None = 600.0, retries: int = 3,
                 backoff_s: float = 0.5, model: str = PIPELINE_MODEL):
        grpcclient = _tritonclient("tritonclient.grpc")
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must not be negative")
        self.url, self.timeout_s, self.retries, self.backoff_s, self.model = url, timeout_s, retries, backoff_s, model
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url, channel_args=_channel_args(backoff_s))

    def generate(self, product, prompt: str, caption: str = "", negative_prompt: str = "", seed: int | None = None,
                 steps: int | None = None, guidance_scale: float | None = None,
                 controlnet_scale: float | None = None, candidates: int | None = None,
                 max_attempts: int | None = None, num_images: int | None = None, threshold: float | None = None,
                 deadline_s: float | None = None) -> Result:
        """Generate ad images for ``product`` (a path, PNG/WebP bytes with alpha, or a PIL RGBA image).

        A setting left None takes the server's default. ``deadline_s`` (default ``timeout_s``)
        bounds the whole call including retries. Raises :class:`InvalidRequestError`,
        :class:`ServerError`, :class:`UnavailableError` or :class:`DeadlineExceededError`.
        """
        settings = dict(seed=seed, steps=steps, guidance_scale=guidance_scale, controlnet_scale=controlnet_scale,
                        candidates=candidates, max_attempts=max_attempts, num_images=num_images, threshold=threshold)
        tensors = build_request(product, prompt, caption, negative_prompt, **settings)
        outputs, latency = self._infer(self.model, tensors, PIPELINE_INPUTS, PIPELINE_OUTPUTS, deadline_s)
        return Result.from_outputs(outputs, latency)

    def judge(self, images, product, caption: str = "", threshold: float | None = None,
              deadline_s: float | None = None) -> "JudgeResult":
        """RFNet's verdict on ad images made elsewhere (the ``rfad_judge`` model).

        ``images``: up to ``JUDGE_MAX_IMAGES`` encoded images (paths, bytes or PIL images) of one
        size, showing ``product`` (the cut-out, as for :meth:`generate`). ``threshold``: the
        p(Available) needed (server default 0.5). Raises as :meth:`generate` does; a bad image is
        an :class:`InvalidRequestError` naming its index.
        """
        from rfad.client.judge import JudgeResult, build_judge_request

        tensors = build_judge_request(images, product, caption, threshold)
        outputs, latency = self._infer(JUDGE_MODEL, tensors, JUDGE_INPUTS, JUDGE_OUTPUTS, deadline_s)
        return JudgeResult.from_outputs(outputs, latency)

    def _infer(self, model: str, tensors: Mapping[str, np.ndarray], inputs: tuple[TensorField, ...],
               outputs: tuple[TensorField, ...], deadline_s: float | None) -> tuple[dict[str, np.ndarray], float]:
        """One request, retried while UNAVAILABLE; returns (output arrays by name, seconds of the last try)."""
        from tritonclient.utils import InferenceServerException

        infer = infer_inputs(tensors, self._grpc, inputs)
        policy = _RetryPolicy(self.retries, self.backoff_s, self.timeout_s if deadline_s is None else deadline_s)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                response = self._client.infer(model, infer, client_timeout=policy.remaining())
            except InferenceServerException as exc:
                time.sleep(policy.delay(error_from_exception(exc), attempt, self.url))
                attempt += 1
                continue
            return {spec.name: response.as_numpy(spec.name) for spec in outputs}, time.perf_counter() - started

    def health(self, timeout_s: float = 5.0) -> dict:
        """Server and model state: ``{"url", "live", "ready", "model_ready", "server_version", "error"}``.

        Never raises for an unreachable server: ``error`` says why it is not ready.
        """
        from tritonclient.utils import InferenceServerException

        state = _health_state(self.url, self.model)
        try:
            state["live"] = bool(self._client.is_server_live(client_timeout=timeout_s))
            state["ready"] = bool(self._client.is_server_ready(client_timeout=timeout_s))
            state["model_ready"] = bool(self._client.is_model_ready(self.model, client_timeout=timeout_s))
            state["server_version"] = self._client.get_server_metadata(client_timeout=timeout_s).version
        except InferenceServerException as exc:
            state["error"] = _health_error(exc)
        return _finish_health(state)

    def is_ready(self, timeout_s: float = 5.0) -> bool:
        """True when the server is ready and serves the pipeline model."""
        return bool(self.health(timeout_s)["model_ready"])

    def wait_until_ready(self, timeout_s: float = 60.0, poll_s: float = 0.25) -> None:
        """Block until :meth:`is_ready`; raises :class:`UnavailableError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.health(timeout_s=min(5.0, max(0.1, deadline - time.monotonic())))
            if state["model_ready"]:
                return
            if time.monotonic() >= deadline:
                raise UnavailableError(f"{self.url} not ready after {timeout_s:g} s ({state['error']})", "UNAVAILABLE")
            time.sleep(poll_s)

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()

    def __enter__(self) -> "RfadClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRfadClient:
    """:class:`RfadClient` for asyncio (tritonclient.grpc.aio): the same arguments, awaitable methods.

    The gRPC channel belongs to an event loop, so it is opened on first use inside the running
    loop; use one instance per loop, and ``await close()`` (or ``async with``) at the end.
    """

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float | None = 600.0, retries: int = 3,
                 backoff_s: float = 0.5, model: str = PIPELINE_MODEL):
        aioclient = _tritonclient("tritonclient.grpc.aio")
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must not be negative")
        self.url, self.timeout_s, self.retries, self.backoff_s, self.model = url, timeout_s, retries, backoff_s, model
        self._aio = aioclient
        self._client = None

    def _channel(self):
        if self._client is None:
            self._client = self._aio.InferenceServerClient(self.url, channel_args=_channel_args(self.backoff_s))
        return self._client

    async def generate(self, product, prompt: str, caption: str = "", negative_prompt: str = "",
                       seed: int | None = None, steps: int | None = None, guidance_scale: float | None = None,
                       controlnet_scale: float | None = None, candidates: int | None = None,
                       max_attempts: int | None = None, num_images: int | None = None,
                       threshold: float | None = None, deadline_s: float | None = None) -> Result:
        """See :meth:`RfadClient.generate`."""
        settings = dict(seed=seed, steps=steps, guidance_scale=guidance_scale, controlnet_scale=controlnet_scale,
                        candidates=candidates, max_attempts=max_attempts, num_images=num_images, threshold=threshold)
        tensors = build_request(product, prompt, caption, negative_prompt, **settings)
        outputs, latency = await self._infer(self.model, tensors, PIPELINE_INPUTS, PIPELINE_OUTPUTS, deadline_s)
        return Result.from_outputs(outputs, latency)

    async def judge(self, images, product, caption: str = "", threshold: float | None = None,
                    deadline_s: float | None = None) -> "JudgeResult":
        """See :meth:`RfadClient.judge`."""
        from rfad.client.judge import JudgeResult, build_judge_request

        tensors = build_judge_request(images, product, caption, threshold)
        outputs, latency = await self._infer(JUDGE_MODEL, tensors, JUDGE_INPUTS, JUDGE_OUTPUTS, deadline_s)
        return JudgeResult.from_outputs(outputs, latency)

    async def _infer(self, model: str, tensors: Mapping[str, np.ndarray], inputs: tuple[TensorField, ...],
                     outputs: tuple[TensorField, ...], deadline_s: float | None) -> tuple[dict[str, np.ndarray], float]:
        """See :meth:`RfadClient._infer`."""
        from tritonclient.utils import InferenceServerException

        infer = infer_inputs(tensors, self._aio, inputs)
        policy = _RetryPolicy(self.retries, self.backoff_s, self.timeout_s if deadline_s is None else deadline_s)
        client = self._channel()
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                response = await client.infer(model, infer, client_timeout=policy.remaining())
            except InferenceServerException as exc:
                await asyncio.sleep(policy.delay(error_from_exception(exc), attempt, self.url))
                attempt += 1
                continue
            return {spec.name: response.as_numpy(spec.name) for spec in outputs}, time.perf_counter() - started

    async def health(self, timeout_s: float = 5.0) -> dict:
        """See :meth:`RfadClient.health`."""
        from tritonclient.utils import InferenceServerException

        client = self._channel()
        state = _health_state(self.url, self.model)
        try:
            state["live"] = bool(await client.is_server_live(client_timeout=timeout_s))
            state["ready"] = bool(await client.is_server_ready(client_timeout=timeout_s))
            state["model_ready"] = bool(await client.is_model_ready(self.model, client_timeout=timeout_s))
            state["server_version"] = (await client.get_server_metadata(client_timeout=timeout_s)).version
        except InferenceServerException as exc:
            state["error"] = _health_error(exc)
        return _finish_health(state)

    async def is_ready(self, timeout_s: float = 5.0) -> bool:
        """See :meth:`RfadClient.is_ready`."""
        return bool((await self.health(timeout_s))["model_ready"])

    async def wait_until_ready(self, timeout_s: float = 60.0, poll_s: float = 0.25) -> None:
        """See :meth:`RfadClient.wait_until_ready`."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = await self.health(timeout_s=min(5.0, max(0.1, deadline - time.monotonic())))
            if state["model_ready"]:
                return
            if time.monotonic() >= deadline:
                raise UnavailableError(f"{self.url} not ready after {timeout_s:g} s ({state['error']})", "UNAVAILABLE")
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        """Close the gRPC channel (if one was opened)."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> "AsyncRfadClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
