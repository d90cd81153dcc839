"""The client's endpoint pool: round-robin, back-off of an unavailable endpoint, health-checked return."""

from __future__ import annotations

import pytest

from rfad.client.endpoints import EndpointPool, parse_endpoints


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_skips_a_failed_endpoint_until_its_backoff_ends_then_checks_it():
    clock = Clock()
    pool = EndpointPool("a:8001,b:8001,c:8001", backoff_s=2.0, max_backoff_s=5.0, clock=clock)
    assert [pool.pick()[0] for _ in range(4)] == ["a:8001", "b:8001", "c:8001", "a:8001"]
    assert pool.failed("b:8001", "UNAVAILABLE: connection refused") == 2.0
    assert [pool.pick() for _ in range(3)] == [("c:8001", False), ("a:8001", False), ("c:8001", False)]
    clock.now += 2.0
    # Back-off over: b comes back only through a health check.
    assert pool.pick() == ("a:8001", False) and pool.pick() == ("b:8001", True)
    assert pool.failed("b:8001", "health: not ready", counted=False) == 4.0  # doubles while it keeps failing
    clock.now += 4.0
    assert pool.failed("b:8001", "health: not ready", counted=False) == 5.0  # capped
    clock.now += 5.0
    pool.restored("b:8001")
    assert {pool.pick()[0] for _ in range(3)} == {"a:8001", "b:8001", "c:8001"}
    assert pool.failed_endpoints() == ["b:8001"]
    assert pool.summary()["b:8001"] == {"requests": 0, "unavailable": 1, "last_error": "health: not ready"}


def test_all_down_says_how_long_to_wait_and_exclude_skips_endpoints_already_tried():
    clock = Clock()
    pool = EndpointPool(["a:1", "b:2"], backoff_s=1.0, clock=clock)
    assert pool.pick(exclude=["a:1"]) == ("b:2", False)
    pool.failed("a:1", "x")
    clock.now += 0.25
    pool.failed("b:2", "y")
    assert pool.pick() == (None, False) and pool.wait_s() == pytest.approx(0.75)
    # After a wait with none usable, the next one in turn is tried anyway (one endpoint: plain retries).
    assert pool.pick(force=True) == ("a:1", False) and pool.pick(force=True) == ("b:2", False)
    clock.now += 0.75
    assert pool.pick() == ("a:1", True)
    pool.answered("a:1")
    assert pool.summary()["a:1"]["requests"] == 1 and pool.pick(exclude=["b:2"]) == ("a:1", False)


@pytest.mark.parametrize("text, message", [
    ("", "expected host:port"),
    ("a:8001,", "expected host:port"),
    ("a", "'a' is not host:port"),
    ("a:0", "port in 1..65535"),
    ("a:8001,a:8001", "a:8001 listed more than once"),
])
def test_bad_endpoint_lists_are_one_line_errors(text, message):
    with pytest.raises(ValueError, match=f"^--url: .*{message}"):
        parse_endpoints(text)


def test_endpoint_forms():
    assert parse_endpoints("127.0.0.1:8001, [::1]:8001 ,triton-0.rfad-pods.ads.svc:8001") == (
        "127.0.0.1:8001", "[::1]:8001", "triton-0.rfad-pods.ads.svc:8001")
