"""The client's endpoint pool: round-robin, back-off of an unavailable endpoint, health-checked return,
INTERNAL answers that take an endpoint out, and dns:/// targets that follow what the name resolves to."""

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
    assert pool.summary()["b:8001"] == {"requests": 0, "unavailable": 1, "internal": 0,
                                        "last_error": "health: not ready", "listed": True}


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
    ("dns:///pods.ns.svc", "'dns:///pods.ns.svc' is not host:port"),
    ("dns://pods:8001", "is not host:port"),
])
def test_bad_endpoint_lists_are_one_line_errors(text, message):
    with pytest.raises(ValueError, match=f"^--url: .*{message}"):
        parse_endpoints(text)


def test_endpoint_forms():
    assert parse_endpoints("127.0.0.1:8001, [::1]:8001 ,triton-0.rfad-pods.ads.svc:8001,dns:///rfad-pods:8001") == (
        "127.0.0.1:8001", "[::1]:8001", "triton-0.rfad-pods.ads.svc:8001", "dns:///rfad-pods:8001")


def test_repeated_internal_takes_an_endpoint_out_for_longer_each_time_until_it_answers():
    clock = Clock()
    pool = EndpointPool("a:1,b:2", backoff_s=1.0, max_backoff_s=8.0, clock=clock, internal_limit=3)
    assert [pool.internal_error("a:1", "CUDA error") for _ in range(2)] == [0.0, 0.0]
    pool.answered("a:1", success=False)  # a request's own error (INVALID_ARGUMENT) proves nothing: still 2 in a row
    assert pool.internal_error("a:1", "CUDA error") == 1.0  # the third in a row: out
    assert {pool.pick()[0] for _ in range(3)} == {"b:2"}
    clock.now += 1.0
    assert pool.pick(exclude=["b:2"]) == ("a:1", True)  # back through a health check, which passes ...
    pool.restored("a:1")
    assert pool.internal_error("a:1", "CUDA error") == 2.0  # ... but it still fails: out again, for longer
    assert pool.summary()["a:1"]["internal"] == 4 and "4 INTERNAL answers in a row" in pool.summary()["a:1"]["last_error"]
    clock.now += 2.0
    pool.answered("a:1")  # a success ends the streak
    assert pool.internal_error("a:1", "one-off") == 0.0


def test_a_dns_target_follows_what_its_name_resolves_to():
    """dns:/// is every address of a headless Service: pods added by the autoscaler join at the next
    refresh, removed ones leave, a failed lookup keeps what was known, and when nothing is usable the
    name is resolved again at once."""
    clock = Clock()
    answers = {"rfad-pods": ["10.0.0.1:8001", "10.0.0.2:8001"]}

    def resolver(host, port):
        assert port == 8001
        if host not in answers:
            raise OSError("Name or service not known")
        return answers[host]

    pool = EndpointPool("dns:///rfad-pods:8001,static:9", clock=clock, resolver=resolver, refresh_s=30.0)
    assert pool.urls == ("static:9", "10.0.0.1:8001", "10.0.0.2:8001")
    answers["rfad-pods"] = ["10.0.0.2:8001", "10.0.0.3:8001"]  # scaled: one pod replaced
    assert pool.urls == ("static:9", "10.0.0.1:8001", "10.0.0.2:8001")  # not before refresh_s
    clock.now += 30.0
    pool.pick()
    assert pool.urls == ("static:9", "10.0.0.2:8001", "10.0.0.3:8001")
    assert pool.summary()["10.0.0.1:8001"]["listed"] is False
    del answers["rfad-pods"]
    clock.now += 30.0
    pool.pick()
    assert pool.urls == ("static:9", "10.0.0.2:8001", "10.0.0.3:8001")  # a DNS failure empties nothing
    assert "does not resolve: Name or service not known" in pool.resolve_errors["dns:///rfad-pods:8001"]
    answers["rfad-pods"] = ["10.0.0.4:8001"]
    for url in pool.urls:
        pool.failed(url, "UNAVAILABLE")
    clock.now += 1.0
    # Nothing usable: the name is looked up again at once, and the new pod takes the request.
    assert pool.pick() == ("10.0.0.4:8001", False)


def test_a_name_that_resolves_to_nothing_yet_is_no_endpoint_with_a_reason():
    pool = EndpointPool("dns:///rfad-pods:8001", resolver=lambda host, port: [])
    assert pool.urls == () and pool.pick() == (None, False) and pool.pick(force=True) == (None, False)
    assert pool.no_endpoint_reason() == "dns:///rfad-pods:8001 resolves to no address"
