"""Several Triton endpoints behind one client: round-robin, skip the unavailable, bring them back.

As gRPC clients spread load themselves (no proxy of ours): every request goes to the next
endpoint in turn; one that answered UNAVAILABLE is left out for a back-off period (doubling while
it keeps failing, up to a maximum); when that period is over, a health check (is the model
ready?) must pass before requests go to it again. An endpoint that answers INTERNAL several times
in a row (``internal_limit``) is left out the same way: a server whose GPU or models broke keeps
saying it is ready, so its back-off grows until it answers a request again.

Targets are ``host:port`` or ``dns:///host:port``: the latter stands for every address the name
resolves to, as gRPC's ``dns`` resolver reads a Kubernetes headless Service (one address per
ready pod). The name is resolved again every ``refresh_s`` and whenever no endpoint is usable, so
pods the autoscaler adds join the rotation and removed ones leave it. ``resolver`` does the
lookup (default: the system's, :func:`resolve_addresses`; an ad system may plug in its own
service discovery). Pure bookkeeping, thread-safe, torch-free and gRPC-free: the clients make
the calls and report what happened.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DNS_SCHEME = "dns:///"
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

Resolver = Callable[[str, int], Sequence[str]]


def parse_endpoints(urls: str | Sequence[str]) -> tuple[str, ...]:
    """``"a:8001,dns:///pods.ns.svc:8001"`` (or a list) -> ``("a:8001", "dns:///pods.ns.svc:8001")``;
    a one-line ValueError naming ``--url`` for an empty list, a missing or bad port, or a duplicate."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    endpoints = tuple(item.strip() for item in items)
    if not endpoints or not all(endpoints):
        raise ValueError(f"--url: {urls!r}: expected host:port[,host:port...] or dns:///host:port")
    for endpoint in endpoints:
        match = _HOST_PORT.match(endpoint.removeprefix(DNS_SCHEME))
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"--url: {endpoint!r} is not host:port (or dns:///host:port) with a port in 1..65535")
    duplicates = sorted({e for e in endpoints if endpoints.count(e) > 1})
    if duplicates:
        raise ValueError(f"--url: {', '.join(duplicates)} listed more than once")
    return endpoints


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_addresses(host: str, port: int) -> list[str]:
    """``host:port`` of every address the system resolver gives ``host`` (A and AAAA records),
    sorted; raises OSError (socket.gaierror) when the name does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({address(info[4][0], port) for info in infos})


@dataclass
class EndpointState:
    """What the pool knows of one endpoint."""

    url: str
    requests: int = 0  # requests that got an answer from it (success or a server-side error)
    unavailable: int = 0  # UNAVAILABLE answers (connection refused or lost, server shutting down or draining)
    internal: int = 0  # INTERNAL answers (the server failed while running a request)
    failures_in_a_row: int = 0
    internal_in_a_row: int = 0  # reset only by a successful answer: a health check does not prove it works
    down_until: float = 0.0  # monotonic time before which it is skipped
    last_error: str = ""
    listed: bool = True  # False once DNS stopped naming it (a pod that went away)

    def summary(self) -> dict:
        return {"requests": self.requests, "unavailable": self.unavailable, "internal": self.internal,
                "last_error": self.last_error, "listed": self.listed}


class EndpointPool:
    """Round-robin over the endpoints of ``urls``. ``backoff_s``: how long an endpoint that failed
    is skipped, doubled per consecutive failure up to ``max_backoff_s``; ``internal_limit``: INTERNAL
    answers in a row that take an endpoint out; ``refresh_s``: how often ``dns:///`` targets are
    resolved again. ``clock`` and ``resolver`` are injectable (tests, own service discovery)."""

    def __init__(self, urls: str | Sequence[str], backoff_s: float = 2.0, max_backoff_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, resolver: Resolver = resolve_addresses,
                 refresh_s: float = 30.0, internal_limit: int = 3):
        if backoff_s <= 0 or max_backoff_s < backoff_s or refresh_s <= 0 or internal_limit < 1:
            raise ValueError("backoff_s, refresh_s must be > 0, max_backoff_s >= backoff_s, internal_limit >= 1")
        self.targets = parse_endpoints(urls)
        self.backoff_s, self.max_backoff_s, self.refresh_s = backoff_s, max_backoff_s, refresh_s
        self.internal_limit = internal_limit
        self._clock, self._resolver = clock, resolver
        self._names = {t: (m.group(1).strip("[]"), int(m.group(2))) for t in self.targets if t.startswith(DNS_SCHEME)
                       for m in [_HOST_PORT.match(t.removeprefix(DNS_SCHEME))]}
        self._resolved = {target: () for target in self._names}  # dns target -> its addresses now
        self._states = {url: EndpointState(url) for url in self.targets if url not in self._names}
        self.resolve_errors: dict[str, str] = {}  # dns target -> why its last lookup failed
        self._resolved_at = float("-inf")
        self._next = 0
        self._lock = threading.Lock()
        self.refresh(force=True)

    # Membership -------------------------------------------------------------------------------
    @property
    def urls(self) -> tuple[str, ...]:
        """The endpoints in rotation now: the static ones, then every address the names resolve to."""
        with self._lock:
            return self._listed()

    def _listed(self) -> tuple[str, ...]:
        static = [t for t in self.targets if t not in self._names]
        resolved = sorted({a for addresses in self._resolved.values() for a in addresses} - set(static))
        return tuple(static + resolved)

    def refresh(self, force: bool = False) -> None:
        """Resolve the ``dns:///`` targets again if ``refresh_s`` has passed (``force``: at most once a
        second). A lookup that fails keeps the addresses it had (a DNS hiccup must not empty the pool)
        and is recorded in :attr:`resolve_errors`."""
        if not self._names:
            return
        with self._lock:
            now = self._clock()
            if now - self._resolved_at < (1.0 if force else self.refresh_s):
                return
            self._resolved_at = now
            for target, (host, port) in self._names.items():
                try:
                    self._resolved[target] = tuple(self._resolver(host, port))
                    self.resolve_errors.pop(target, None)
                except OSError as exc:
                    self.resolve_errors[target] = f"{target} does not resolve: {exc}"
            listed = set(self._listed())
            for url in listed - set(self._states):
                self._states[url] = EndpointState(url)
            for url, state in self._states.items():
                state.listed = url in listed

    def no_endpoint_reason(self) -> str:
        """Why the pool has no endpoint (only ``dns:///`` targets that resolve to nothing)."""
        with self._lock:
            errors = [self.resolve_errors.get(t, f"{t} resolves to no address") for t in self._names]
        return "; ".join(errors) or "no endpoint"

    # Picking ----------------------------------------------------------------------------------
    def pick(self, exclude: Sequence[str] = (), force: bool = False) -> tuple[str | None, bool]:
        """The next endpoint to send to, and whether it must pass a health check first (its back-off
        is over but it has not answered since it failed). (None, False) when every endpoint not in
        ``exclude`` is still backing off, or none is listed. ``force``: the next one in turn whatever
        its state (after a wait, when none was usable), without a check."""
        self.refresh()
        for attempt in range(2):
            with self._lock:
                urls = self._listed()
                now = self._clock()
                for offset in range(len(urls)):
                    url = urls[(self._next + offset) % len(urls)]
                    state = self._states[url]
                    if force:
                        self._next = (self._next + offset + 1) % len(urls)
                        return url, False
                    if url in exclude or state.down_until > now:
                        continue
                    self._next = (self._next + offset + 1) % len(urls)
                    return url, state.failures_in_a_row > 0
            if attempt == 0:  # nothing usable: pods may have been replaced, ask DNS again
                self.refresh(force=True)
        return None, False

    def wait_s(self) -> float:
        """Seconds until the first endpoint's back-off ends (0 if one is usable now)."""
        with self._lock:
            listed = self._listed()
            return max(0.0, min((self._states[u].down_until for u in listed), default=0.0) - self._clock())

    # Outcomes ---------------------------------------------------------------------------------
    def answered(self, url: str, success: bool = True) -> None:
        """``url`` answered: a result (``success``), or an error of the request itself: it is up."""
        with self._lock:
            state = self._states[url]
            state.requests += 1
            state.failures_in_a_row = 0
            state.down_until = 0.0
            if success:
                state.internal_in_a_row = 0

    def restored(self, url: str) -> None:
        """A health check of ``url`` passed after its back-off."""
        with self._lock:
            state = self._states[url]
            state.failures_in_a_row = 0
            state.down_until = 0.0

    def failed(self, url: str, error: str, counted: bool = True) -> float:
        """``url`` was unavailable (``counted``: a request got UNAVAILABLE; else a health check
        failed): skip it for the next back-off period, which is returned."""
        with self._lock:
            state = self._states[url]
            if counted:
                state.unavailable += 1
            state.failures_in_a_row += 1
            return self._take_out(state, state.failures_in_a_row, error)

    def internal_error(self, url: str, error: str) -> float:
        """``url`` answered INTERNAL. After ``internal_limit`` in a row it is taken out like an
        unavailable one, for longer each further time; returns the back-off period (0: still in)."""
        with self._lock:
            state = self._states[url]
            state.requests += 1
            state.internal += 1
            state.internal_in_a_row += 1
            state.last_error = error
            beyond = state.internal_in_a_row - self.internal_limit
            if beyond < 0:
                return 0.0
            state.failures_in_a_row += 1
            return self._take_out(state, beyond + 1, f"{state.internal_in_a_row} INTERNAL answers in a row: {error}")

    def _take_out(self, state: EndpointState, failures: int, error: str) -> float:
        period = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        state.down_until = self._clock() + period
        state.last_error = error
        return period

    # Reports ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, dict]:
        """Per endpoint ever listed: requests answered, UNAVAILABLE and INTERNAL answers, the last
        error, and whether DNS still lists it."""
        with self._lock:
            return {url: state.summary() for url, state in self._states.items()}

    def failed_endpoints(self) -> list[str]:
        """Endpoints that answered UNAVAILABLE at least once."""
        with self._lock:
            return [url for url, state in self._states.items() if state.unavailable]
