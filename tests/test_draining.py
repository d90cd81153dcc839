"""Draining without loss, the parts that need no server: the request trace a served request
carries, the busy count read from a metrics page, and the drain times a profile implies. (A
real server drained mid-loop: tests/test_fleet.py.)"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rfad.contract import InvalidRequest
from rfad.deploy.drain_times import drain_times
from rfad.deploy.profiles import CPU, DATACENTER, EDGE
from rfad.serving.draining import DrainError, busy_requests, drain
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


def test_the_drain_reads_its_own_metrics_page_past_an_http_proxy(monkeypatch, tmp_path):
    """A pod or machine with http_proxy set (and no no_proxy for loopback) still drains: the page is
    read directly, as the launcher's own readiness calls are."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = PAGE.replace("} 2", "} 0").replace("} 3", "} 0").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen would now build one that uses it
        result = drain(f"http://127.0.0.1:{server.server_port}/metrics", tmp_path / "draining", timeout_s=5.0)
        assert result.drained and result.busy == 0 and (tmp_path / "draining").exists()
    finally:
        server.shutdown()
        server.server_close()
