"""Several Triton endpoints behind one client: round-robin, skip the unavailable, bring them back.

As gRPC clients spread load themselves (no proxy of ours): every request goes to the next
endpoint in turn; one that answered UNAVAILABLE is left out for a back-off period (doubling while
it keeps failing, up to a maximum); when that period is over, a health check (is the model
ready?) must pass before requests go to it again. Pure bookkeeping, thread-safe, torch-free and
gRPC-free: the clients make the calls and report what happened.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def parse_endpoints(urls: str | Sequence[str]) -> tuple[str, ...]:
    """``"a:8001,b:8001"`` (or a list) -> ``("a:8001", "b:8001")``; a one-line ValueError naming
    ``--url`` for an empty list, a missing or bad port, or a duplicate."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    endpoints = tuple(item.strip() for item in items)
    if not endpoints or not all(endpoints):
        raise ValueError(f"--url: {urls!r}: expected host:port[,host:port...]")
    for endpoint in endpoints:
        match = _HOST_PORT.match(endpoint)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"--url: {endpoint!r} is not host:port with a port in 1..65535")
    duplicates = sorted({e for e in endpoints if endpoints.count(e) > 1})
    if duplicates:
        raise ValueError(f"--url: {', '.join(duplicates)} listed more than once")
    return endpoints


@dataclass
class EndpointState:
    """What the pool knows of one endpoint."""

    url: str
    requests: int = 0  # requests that got an answer from it (success or a server-side error)
    unavailable: int = 0  # UNAVAILABLE answers (connection refused or lost, server shutting down)
    failures_in_a_row: int = 0
    down_until: float = 0.0  # monotonic time before which it is skipped
    last_error: str = ""

    def summary(self) -> dict:
        return {"requests": self.requests, "unavailable": self.unavailable, "last_error": self.last_error}


class EndpointPool:
    """Round-robin over ``urls``. ``backoff_s``: how long an endpoint that failed is skipped,
    doubled per consecutive failure up to ``max_backoff_s``. ``clock`` is injectable for tests."""

    def __init__(self, urls: str | Sequence[str], backoff_s: float = 2.0, max_backoff_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        if backoff_s <= 0 or max_backoff_s < backoff_s:
            raise ValueError("backoff_s must be > 0 and max_backoff_s >= backoff_s")
        self.urls = parse_endpoints(urls)
        self.backoff_s, self.max_backoff_s, self._clock = backoff_s, max_backoff_s, clock
        self._states = {url: EndpointState(url) for url in self.urls}
        self._next = 0
        self._lock = threading.Lock()

    def pick(self, exclude: Sequence[str] = (), force: bool = False) -> tuple[str | None, bool]:
        """The next endpoint to send to, and whether it must pass a health check first (its back-off
        is over but it has not answered since it failed). (None, False) when every endpoint not in
        ``exclude`` is still backing off. ``force``: the next one in turn whatever its state (after
        a wait, when none was usable), without a check."""
        with self._lock:
            now = self._clock()
            for offset in range(len(self.urls)):
                url = self.urls[(self._next + offset) % len(self.urls)]
                state = self._states[url]
                if force:
                    self._next = (self._next + offset + 1) % len(self.urls)
                    return url, False
                if url in exclude or state.down_until > now:
                    continue
                self._next = (self._next + offset + 1) % len(self.urls)
                return url, state.failures_in_a_row > 0
            return None, False

    def wait_s(self) -> float:
        """Seconds until the first endpoint's back-off ends (0 if one is usable now)."""
        with self._lock:
            return max(0.0, min(s.down_until for s in self._states.values()) - self._clock())

    def answered(self, url: str) -> None:
        """``url`` answered (a result, or an error of the request itself): it is up."""
        with self._lock:
            state = self._states[url]
            state.requests += 1
            state.failures_in_a_row = 0
            state.down_until = 0.0

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
            period = min(self.max_backoff_s, self.backoff_s * 2 ** (state.failures_in_a_row - 1))
            state.down_until = self._clock() + period
            state.last_error = error
            return period

    def summary(self) -> dict[str, dict]:
        """Per endpoint: requests answered, UNAVAILABLE answers, the last error."""
        with self._lock:
            return {url: state.summary() for url, state in self._states.items()}

    def failed_endpoints(self) -> list[str]:
        """Endpoints that answered UNAVAILABLE at least once."""
        with self._lock:
            return [url for url, state in self._states.items() if state.unavailable]
