"""How both clients talk to Triton, written once: retries, deadlines, health, readiness.

The blocking :class:`rfad.client.RfadClient` (tritonclient.grpc) and the asyncio
:class:`rfad.client.AsyncRfadClient` (tritonclient.grpc.aio) differ only in how they wait: one
calls, the other awaits. So each exchange is written once as a generator of the steps it takes
("sans-I/O"): it yields a :class:`Call` of a tritonclient method or a :class:`Sleep`, and gets
the call's result sent back (or its ``InferenceServerException`` thrown in). One loop,
:func:`_drive`, performs the steps for both: :func:`run_blocking` with plain calls and
``time.sleep``, :func:`run_async` with awaits and ``asyncio.sleep``. Only UNAVAILABLE (server down or restarting) is
retried, with exponential backoff inside the request's deadline: a bad request or a
server-side failure would fail the same way again. With several endpoints (``url="a:8001,b:8001"``,
or ``dns:///name:port`` for every address of a headless Service) requests go round-robin; one
that answers UNAVAILABLE is left out for a while and the request goes to the next at once
(:mod:`rfad.client.endpoints`); the backoff applies when none is left. An INTERNAL answer fails
the request and counts against its endpoint (several in a row take it out); NOT_FOUND for a
model the server lacks fails at once and leaves the endpoint in rotation.

Every request carries an id (Triton's request id; a random one unless the caller gives it),
kept across its retries, and its try number (the request parameter ``rfad_try``), so the server's
log and metrics show a retry as one (:mod:`rfad.serving.request_trace`).
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np

from rfad.client.endpoints import EndpointPool, Resolver, resolve_addresses
from rfad.client.errors import (
    DeadlineExceededError,
    ModelNotFoundError,
    RfadClientError,
    UnavailableError,
    error_from_exception,
    invalid_request,
)
from rfad.client.request import infer_inputs
from rfad.client.security import ChannelSecurity
from rfad.contract import MAX_REQUEST_ID_LENGTH, PIPELINE_MODEL, REQUEST_TRY_PARAMETER, TRITON_PORTS, TensorField
from rfad.extras import missing_extras_message

DEFAULT_URL = f"127.0.0.1:{TRITON_PORTS['grpc']}"

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """Step: call ``method(*args, **kwargs)`` (await it in the asyncio client)."""

    method: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    """Step: wait ``seconds``."""

    seconds: float


Steps = Generator["Call | Sleep", Any, T]


def _server_exception() -> type[Exception]:
    from tritonclient.utils import InferenceServerException

    return InferenceServerException


async def _drive(steps: Steps[T], perform) -> T:
    """THE loop of both clients: perform each step of ``steps`` with ``await perform(step)``, send the
    outcome back (or throw a tritonclient ``InferenceServerException`` in), return what they return."""
    server_exception = _server_exception()
    outcome, error = None, None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(outcome)
        except StopIteration as done:
            return done.value
        outcome, error = None, None
        try:
            outcome = await perform(step)
        except server_exception as exc:
            error = exc


async def _perform_blocking(step: Call | Sleep):
    # Awaits nothing, so a _drive over it never suspends: run_blocking needs no event loop.
    if isinstance(step, Sleep):
        return time.sleep(step.seconds)
    return step.method(*step.args, **step.kwargs)


async def _perform_awaiting(step: Call | Sleep):
    if isinstance(step, Sleep):
        return await asyncio.sleep(step.seconds)
    return await step.method(*step.args, **step.kwargs)


def run_blocking(steps: Steps[T]) -> T:
    """Perform ``steps`` with blocking calls and ``time.sleep``; returns what they return."""
    coroutine = _drive(steps, _perform_blocking)
    try:
        coroutine.send(None)  # runs to the end in one go: nothing in it suspends
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a blocking client step suspended")  # a bug: _perform_blocking awaits nothing


async def run_async(steps: Steps[T]) -> T:
    """Perform ``steps`` with awaited calls and ``asyncio.sleep``; returns what they return."""
    return await _drive(steps, _perform_awaiting)


@dataclass
class RetryPolicy:
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


def new_request_id(request_id: str | None = None) -> str:
    """``request_id`` checked (printable, at most MAX_REQUEST_ID_LENGTH characters), or a new random one."""
    if request_id is None:
        return uuid.uuid4().hex
    if not request_id or len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
        raise invalid_request(f"request_id: {request_id!r} must be 1..{MAX_REQUEST_ID_LENGTH} printable characters")
    return request_id


class Answer(NamedTuple):
    """What :func:`infer_steps` returns: the output arrays by name, the last try's seconds, the
    request's id and how many times it was sent (the arguments of ``Result.from_outputs``)."""

    outputs: dict[str, np.ndarray]
    latency_s: float
    request_id: str
    tries: int


def infer_steps(connections: Mapping[str, Any], pool: EndpointPool, model: str, inputs: list,
                outputs: tuple[TensorField, ...], policy: RetryPolicy, url: str, request_id: str,
                health_timeout_s: float = 2.0) -> Steps[Answer]:
    """One inference over the endpoints of ``pool`` (``connections``: url -> tritonclient client).

    The next endpoint in turn takes it; one back from its back-off must pass a health check
    first. UNAVAILABLE: that endpoint is left out and the next one tried at once; when every
    endpoint has failed this request (or backs off), the policy's backoff is waited and the next
    endpoint in turn tried anyway (one endpoint: plain retries). INTERNAL fails the request and
    counts against the endpoint; any other error is the request's own. Every try carries
    ``request_id`` and its number; a raised error carries ``request_id`` too.
    """
    try:
        return (yield from _infer_tries(connections, pool, model, inputs, outputs, policy, url, request_id,
                                        health_timeout_s))
    except RfadClientError as error:
        error.request_id = request_id
        raise


def _infer_tries(connections, pool: EndpointPool, model: str, inputs: list, outputs: tuple[TensorField, ...],
                 policy: RetryPolicy, url: str, request_id: str, health_timeout_s: float) -> Steps[Answer]:
    server_exception = _server_exception()
    attempt, tried, last, tries = 0, [], None, 0
    while True:
        endpoint, check = pool.pick(exclude=tried)
        if endpoint is None:
            if tried:  # every usable endpoint failed this request: a retry, after the backoff
                yield Sleep(policy.delay(last, attempt, url))
                attempt, tried = attempt + 1, []
            endpoint, check = pool.pick(force=True)
            if endpoint is None:  # only dns:/// targets, resolving to nothing (yet): wait as for a down server
                last = UnavailableError(pool.no_endpoint_reason(), "UNAVAILABLE")
                yield Sleep(policy.delay(last, attempt, url))
                attempt += 1
                continue
        client = connections[endpoint]
        if check:
            state = yield from health_steps(client, endpoint, model, min(health_timeout_s, policy.remaining() or
                                                                         health_timeout_s))
            if state["model_unknown"]:  # a healthy server without the model: no retry can help
                pool.restored(endpoint)
                raise ModelNotFoundError(f"{endpoint}: {state['error']}", "NOT_FOUND")
            if not state["model_ready"]:
                pool.failed(endpoint, f"health check: {state['error']}", counted=False)
                tried.append(endpoint)
                last = UnavailableError(f"{endpoint}: {state['error']}", "UNAVAILABLE")
                continue
            pool.restored(endpoint)
        started = time.perf_counter()
        tries += 1
        try:
            response = yield Call(client.infer, (model, inputs), {
                "client_timeout": policy.remaining(), "request_id": request_id,
                "parameters": {REQUEST_TRY_PARAMETER: tries}})
        except server_exception as exc:
            error = error_from_exception(exc)
            if isinstance(error, UnavailableError):
                pool.failed(endpoint, f"{error.status}: {error}")
                tried.append(endpoint)
                last = error
                continue
            if error.status == "INTERNAL":
                pool.internal_error(endpoint, str(error))
            else:
                pool.answered(endpoint, success=False)
            raise error from None
        pool.answered(endpoint)
        return Answer({spec.name: response.as_numpy(spec.name) for spec in outputs}, time.perf_counter() - started,
                      request_id, tries)


def health_steps(client, url: str, model: str, timeout_s: float) -> Steps[dict]:
    """Server and model state: ``{"url", "live", "ready", "model", "model_ready", "model_unknown",
    "server_version", "error"}`` (``model_unknown``: the server is ready and has no such model); an
    unreachable server is an ``error`` saying why, never an exception."""
    state = {"url": url, "live": False, "ready": False, "model": model, "model_ready": False, "model_unknown": False,
             "server_version": "", "error": ""}
    try:
        state["live"] = bool((yield Call(client.is_server_live, (), {"client_timeout": timeout_s})))
        state["ready"] = bool((yield Call(client.is_server_ready, (), {"client_timeout": timeout_s})))
        state["model_ready"] = bool((yield Call(client.is_model_ready, (model,), {"client_timeout": timeout_s})))
        metadata = yield Call(client.get_server_metadata, (), {"client_timeout": timeout_s})
        state["server_version"] = metadata.version
        if state["ready"] and not state["model_ready"]:  # is the model unknown, or loading / unloading?
            yield Call(client.get_model_metadata, (model,), {"client_timeout": timeout_s})
    except _server_exception() as exc:
        error = error_from_exception(exc)
        state["model_unknown"] = isinstance(error, ModelNotFoundError)
        state["error"] = f"{error.status or 'error'}: {error}"
    if not state["error"] and not state["model_ready"]:
        state["error"] = f"model {model} is not ready" if state["ready"] else "server is not ready"
    return state


def endpoints_health_steps(connections: Mapping[str, Any], urls: tuple[str, ...], model: str,
                           timeout_s: float, no_endpoint: str = "no endpoint") -> Steps[dict]:
    """:func:`health_steps` of every endpoint of ``urls``. One endpoint: its state. Several (or
    none, with ``no_endpoint`` as the error): ready only when every one is, the not-ready ones named
    in ``error``, each state under ``endpoints``."""
    states = {}
    for endpoint in urls:
        states[endpoint] = yield from health_steps(connections[endpoint], endpoint, model, timeout_s)
    if len(states) == 1:
        return next(iter(states.values()))
    versions = sorted({s["server_version"] for s in states.values() if s["server_version"]})
    flags = {key: bool(states) and all(s[key] for s in states.values()) for key in ("live", "ready", "model_ready")}
    errors = "; ".join(f"{e}: {s['error']}" for e, s in states.items() if s["error"])
    return {"url": ",".join(states), "model": model, "endpoints": states, **flags,
            "model_unknown": bool(states) and all(s["model_unknown"] for s in states.values()),
            "server_version": ", ".join(versions), "error": errors if states else no_endpoint}


def ready_steps(connections: Mapping[str, Any], pool: EndpointPool, url: str, model: str, timeout_s: float,
                poll_s: float) -> Steps[None]:
    """Poll :func:`endpoints_health_steps` until the model is ready (on every endpoint of ``pool``);
    raises :class:`UnavailableError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        pool.refresh()
        state = yield from endpoints_health_steps(connections, pool.urls, model,
                                                  min(5.0, max(0.1, deadline - time.monotonic())),
                                                  pool.no_endpoint_reason())
        if state["model_ready"]:
            return
        if time.monotonic() >= deadline:
            raise UnavailableError(f"{url} not ready after {timeout_s:g} s ({state['error']})", "UNAVAILABLE")
        yield Sleep(poll_s)


def import_tritonclient(module: str):
    """Import a tritonclient module, saying which extra installs it when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{missing_extras_message('rfad.client', ['client'])} ({exc})") from exc


def channel_args(backoff_s: float) -> list[tuple[str, int]]:
    """gRPC channel options: tritonclient's unlimited message sizes, and a reconnect backoff
    no longer than ours. gRPC's own backoff grows to 120 s; a retry made while the channel
    waits out that backoff fails at once, even when the server is already back."""
    grpcclient = import_tritonclient("tritonclient.grpc")
    reconnect_ms = int(min(max(backoff_s, 0.1), 5.0) * 1000)
    return [("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms)]


class Connections:
    """One tritonclient client per endpoint, made on first use: with ``dns:///`` targets the
    endpoints come and go as the fleet scales. Thread-safe."""

    def __init__(self, factory: Callable[[str], Any]):
        self._factory = factory
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getitem__(self, url: str):
        with self._lock:
            if url not in self._clients:
                self._clients[url] = self._factory(url)
            return self._clients[url]

    def values(self) -> list:
        """The clients made so far."""
        with self._lock:
            return list(self._clients.values())


class ClientSettings:
    """What the blocking and asyncio clients share: where the servers are, how to retry and how
    to connect (the arguments are :class:`rfad.client.RfadClient`'s)."""

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float | None = 600.0, retries: int = 3,
                 backoff_s: float = 0.5, model: str = PIPELINE_MODEL, endpoint_backoff_s: float = 2.0,
                 security: ChannelSecurity | None = None, resolver: Resolver = resolve_addresses):
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must not be negative")
        self.security = security or ChannelSecurity()
        self.endpoints = EndpointPool(url, endpoint_backoff_s, max(60.0, endpoint_backoff_s), resolver=resolver)
        self.urls = self.endpoints.targets
        self.url = ",".join(self.urls)
        self.timeout_s, self.retries, self.backoff_s, self.model = timeout_s, retries, backoff_s, model

    def _infer_steps(self, connections, grpc_module, model: str, tensors: Mapping[str, np.ndarray],
                     inputs: tuple[TensorField, ...], outputs: tuple[TensorField, ...],
                     deadline_s: float | None, request_id: str | None) -> Steps[Answer]:
        """:func:`infer_steps` for request ``tensors`` under this client's retry policy."""
        policy = RetryPolicy(self.retries, self.backoff_s, self.timeout_s if deadline_s is None else deadline_s)
        return infer_steps(connections, self.endpoints, model, infer_inputs(tensors, grpc_module, inputs), outputs,
                           policy, self.url, new_request_id(request_id))

    def _connect(self, grpc_module) -> Connections:
        """One tritonclient (``grpc_module``: tritonclient.grpc or .aio) client per endpoint, by url,
        made on first use, each with this client's TLS credentials, server name and headers: the
        same for every address a ``dns:///`` target resolves to (pod IPs, which the server's
        certificate does not name; ``tls_server_name`` says the name it does)."""
        return Connections(lambda url: self.security.connect(grpc_module, url, channel_args(self.backoff_s)))

    def _health_steps(self, connections, timeout_s: float) -> Steps[dict]:
        self.endpoints.refresh()
        return endpoints_health_steps(connections, self.endpoints.urls, self.model, timeout_s,
                                      self.endpoints.no_endpoint_reason())

    def _ready_steps(self, connections, timeout_s: float, poll_s: float) -> Steps[None]:
        return ready_steps(connections, self.endpoints, self.url, self.model, timeout_s, poll_s)
