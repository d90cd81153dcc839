"""Draining without loss, the parts that need no server: the request trace a served request
carries, the busy count read from a metrics page, and the drain times a profile implies. (A
real server drained mid-loop: tests/test_fleet.py.)"""

from __future__ import annotations

import json

import pytest

from rfad.contract import InvalidRequest
from rfad.deploy.drain_times import drain_times
from rfad.deploy.profiles import CPU, DATACENTER, EDGE
from rfad.serving.draining import DrainError, busy_requests
from rfad.serving.request_trace import request_trace

# Lines as Triton 2.51's /metrics page writes them (rfad_pipeline's gauge and Triton's pending count).
PAGE = """# HELP rfad_requests_in_flight rfad_pipeline requests running now
# TYPE rfad_requests_in_flight gauge
rfad_requests_in_flight{model="rfad_pipeline"} 2
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="rfad_pipeline",version="1"} 3
nv_inference_pending_request_count{model="unet",version="1"} 9
"""


def test_a_request_trace_is_its_id_and_try_and_a_bad_try_is_the_request_s_error():
    assert request_trace("sku-1", json.dumps({"rfad_try": 3})).describe() == "request 'sku-1' try 3"
    assert request_trace("", "{}").describe() == "request (no id) try 1" and not request_trace("", "").retry
    for value in (0, "2", True, 1.5):
        with pytest.raises(InvalidRequest, match="parameter rfad_try: expected an integer >= 1"):
            request_trace("x", json.dumps({"rfad_try": value}))
    with pytest.raises(InvalidRequest, match="request id: 129 characters"):
        request_trace("x" * 129, "{}")


def test_busy_counts_running_and_queued_pipeline_requests_and_an_old_repository_is_named():
    assert busy_requests(PAGE) == 5
    with pytest.raises(DrainError, match="no rfad_requests_in_flight for rfad_pipeline"):
        busy_requests(PAGE.replace("rfad_requests_in_flight", "other"))


@pytest.mark.parametrize("profile", [EDGE, DATACENTER])
def test_the_grace_period_covers_the_drain_and_the_exit_timeout(profile):
    times = drain_times(profile)
    k8s = profile.kubernetes
    assert times.worst_loop_s >= profile.pipeline.max_attempts_cap * 150 * k8s.step_seconds  # the longest request
    assert times.exit_timeout_s >= times.worst_loop_s
    assert times.grace_s > times.endpoint_drop_s + times.worst_loop_s + times.exit_timeout_s
    with pytest.raises(ValueError, match="not a Kubernetes profile"):
        drain_times(CPU)
