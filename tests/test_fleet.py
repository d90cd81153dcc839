"""The serving fleet's behaviours on real local Triton servers (tiny models, CPU): request ids and
retries seen server-side, draining without loss, dns:/// discovery, INTERNAL and unknown-model
handling, a catalog batch killed mid-shard and resumed, and the autoscaler's series under load.

Servers, for the module: a good one (127.0.0.1:P) and a broken one (127.0.0.2:P, the same port,
as pods behind a headless Service: its repository lacks vae_decoder, so every generation fails
INTERNAL naming it); the drain test starts its own ``rfad-serve``. The repositories leave out the
judge models (5 models start faster than 12; nothing here needs a verdict) and run two
``rfad_pipeline`` instances, so a request finds an idle instance while a long loop runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rfad.client import AsyncRfadClient, ModelNotFoundError, RfadClient, ServerError
from rfad.client.catalog import shard_of
from rfad.contract import PIPELINE_MODEL
from rfad.export.k8s_monitoring import adapter_rule
from rfad.export.triton_config_check import check_repository
from rfad.export.triton_repo import write_triton_repo
from rfad.serving.launcher import TritonServer, free_port, free_ports, port_is_free
from rfad.serving.draining import busy_requests
from rfad.serving.metrics_page import fetch_metrics, metric_sum

JUDGE_MODELS = ("rfad_judge", "rfad_judge_prepare", "rfad_judge_verdict", "depth", "saliency", "rfnet", "rfnet_text")
QUICK = {"steps": 1, "guidance_scale": 1.0}  # one denoising step: a fraction of a second
# rfad_pipeline's log line per request (rfad.serving.request_trace): id, try, outcome.
LOG_LINE = re.compile(r"rfad_pipeline request '([^']+)' try (\d+): ([a-z]+)")


@pytest.fixture(scope="module")
def repo(tiny_onnx, tmp_path_factory):
    repo = write_triton_repo(tiny_onnx, tmp_path_factory.mktemp("fleet") / "repo", canvas_size=64,
                             pipeline_judge="none", pipeline_instances=2)
    for name in JUDGE_MODELS:
        shutil.rmtree(repo / name)
    check_repository(repo)  # still a consistent repository
    return repo


@pytest.fixture(scope="module")
def servers(repo, tmp_path_factory):
    broken = shutil.copytree(repo, tmp_path_factory.mktemp("fleet") / "broken")
    shutil.rmtree(broken / "vae_decoder")
    port = next(p for p in iter(free_port, None) if port_is_free(p, "127.0.0.2"))
    good = TritonServer(repo, host="127.0.0.1", grpc_port=port, http_port=0, metrics_port=0)
    bad = TritonServer(broken, host="127.0.0.2", grpc_port=port, http_port=0, metrics_port=0)
    try:
        with ThreadPoolExecutor(2) as pool:  # the two start-ups overlap
            list(pool.map(TritonServer.start, (good, bad)))
        yield good, bad
    finally:
        good.stop()
        bad.stop()


@pytest.fixture(scope="module")
def product(tiny_zoo):
    return tiny_zoo / "samples" / "bottle.png"


def answers(*servers) -> dict[str, list[tuple[int, str]]]:
    """Request id -> (try, outcome) of every rfad_pipeline log line of ``servers``."""
    found: dict[str, list[tuple[int, str]]] = {}
    for server in servers:
        text = server if isinstance(server, str) else server.log_text()
        for request_id, try_number, outcome in LOG_LINE.findall(text):
            found.setdefault(request_id, []).append((int(try_number), outcome))
    return found


def test_dns_discovery_and_a_server_that_keeps_failing_internal_is_taken_out(servers, product):
    """dns:/// reaches every address of the name; the broken server's INTERNAL answers fail their
    requests (naming the component), and after three in a row it gets no more."""
    good, bad = servers
    port = good.grpc_port

    def headless_service(host, service_port):  # what cluster DNS answers for a headless Service
        assert (host, service_port) == ("rfad-pods.test", port)
        return [f"127.0.0.1:{port}", f"127.0.0.2:{port}"]

    with RfadClient(f"dns:///rfad-pods.test:{port}", retries=0, endpoint_backoff_s=60,
                    resolver=headless_service) as client:
        outcomes = []
        for i in range(9):
            try:
                result = client.generate(product, "an ad", seed=i, request_id=f"dns-{i}", **QUICK)
                outcomes.append(("ok", result.request_id))
            except ServerError as exc:
                assert exc.status == "INTERNAL" and "vae_decoder" in str(exc) and exc.request_id == f"dns-{i}"
                outcomes.append(("INTERNAL", exc.request_id))
        summary = client.endpoints.summary()
    assert [o for o, _ in outcomes] == ["ok", "INTERNAL"] * 3 + ["ok"] * 3
    assert summary[f"127.0.0.2:{port}"]["internal"] == 3 and summary[f"127.0.0.1:{port}"]["requests"] == 6
    assert "3 INTERNAL answers in a row" in summary[f"127.0.0.2:{port}"]["last_error"]
    # The server logged each request under the client's id; the broken one said why it failed.
    assert [answers(good)[f"dns-{i}"] for i in (0, 2, 4, 6, 7, 8)] == [[(1, "ok")]] * 6
    assert answers(bad)["dns-1"] == [(1, "failed")]
    # The system resolver, on a name of this machine's /etc/hosts.
    with RfadClient(f"dns:///localhost:{port}", retries=0) as local:
        assert local.endpoints.urls == (f"127.0.0.1:{port}",)
        assert local.generate(product, "an ad", request_id="via-localhost", **QUICK).images


def test_an_unknown_model_fails_at_once_and_leaves_the_server_in_rotation(servers, product):
    good, _ = servers
    with RfadClient(good.grpc_url, retries=3, backoff_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(ModelNotFoundError, match="rfad_judge") as raised:  # this fleet serves no judge
            client.judge([product.read_bytes()], product, request_id="judge-1")
        assert time.monotonic() - started < 1.0 and raised.value.status == "NOT_FOUND"  # no retry, no backoff
        assert client.endpoints.summary()[good.grpc_url]["unavailable"] == 0
        result = client.generate(product, "an ad", **QUICK)
        assert result.tries == 1 and len(result.request_id) == 32  # a random id when none is given
    with RfadClient(good.grpc_url, model="rfad_judge") as misnamed:
        state = misnamed.health()
        assert state["ready"] and state["model_unknown"] and not state["model_ready"]


def _stdout_lines(process: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def read() -> None:
        for line in process.stdout:
            lines.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_draining_server_finishes_its_loop_and_sends_new_requests_elsewhere(repo, servers, product, tmp_path):
    """SIGTERM to rfad-serve while it runs a long loop: the loop completes, new requests are refused
    UNAVAILABLE and retried on the other server, and every request is answered exactly once,
    counted in the servers' own logs by request id."""
    good, _ = servers
    grpc, http, metrics = free_ports(3)
    log = tmp_path / "draining.log"
    serve = subprocess.Popen([sys.executable, "-m", "rfad.serving.cli", "--repo", str(repo), "--grpc-port", str(grpc),
                              "--http-port", str(http), "--metrics-port", str(metrics), "--log", str(log),
                              "--exit-timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its lines as they are printed
    lines: list[str] = []
    reader = _stdout_lines(serve, lines)
    draining = f"127.0.0.1:{grpc}"
    try:
        _wait_for(lambda: any(line.startswith("serving ") for line in lines) or serve.poll() is not None, 300,
                  "rfad-serve to start")
        with RfadClient(draining, retries=0) as direct:
            long_loop = {}
            worker = threading.Thread(target=lambda: long_loop.update(result=direct.generate(
                product, "an ad", steps=150, candidates=4, num_images=4, request_id="long-loop")))
            worker.start()
            metrics_url = f"http://127.0.0.1:{metrics}/metrics"
            _wait_for(lambda: metric_sum(fetch_metrics(metrics_url), "rfad_requests_in_flight",
                                         model=PIPELINE_MODEL) == 1, 60, "the long loop to start")
            serve.send_signal(signal.SIGTERM)
            _wait_for(lambda: any(line.startswith("draining:") for line in lines), 10, "rfad-serve to drain")
            with RfadClient(f"{draining},{good.grpc_url}", retries=2) as fleet:
                results = [fleet.generate(product, "an ad", seed=i, request_id=f"job-{i}", **QUICK) for i in range(5)]
            assert worker.is_alive(), "the long loop ended before the drain was tested; lengthen it"
            worker.join(120)
        assert serve.wait(60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
        reader.join(10)
    assert long_loop["result"].request_id == "long-loop" and len(long_loop["result"].images) == 4
    assert any(line.startswith("drained in") for line in lines), lines
    # job-0 met the draining server first: refused there, answered by the good one on its second try.
    assert results[0].tries == 2 and all(r.tries == 1 for r in results[1:])
    seen = answers(log.read_text(), good)
    assert seen["long-loop"] == [(1, "ok")]
    assert seen["job-0"] == [(1, "refused"), (2, "ok")]
    assert all(seen[f"job-{i}"] == [(1, "ok")] for i in range(1, 5))
    assert metric_sum(fetch_metrics(good.metrics_url), "rfad_request_retries_total", model=PIPELINE_MODEL) >= 1


def _batch(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rfad.client.cli", "batch", "--no-progress", "--concurrency", "1",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_shard_killed_mid_run_resumes_and_the_merge_has_every_job_once(servers, product, tmp_path):
    good, _ = servers
    jobs = [{"id": f"sku-{i:03d}", "product": str(product), "prompt": "an ad", "seed": i, **QUICK} for i in range(14)]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(job) + "\n" for job in jobs))
    shards = [[job["id"] for job in jobs if shard_of(job["id"], 2) == i] for i in range(2)]
    killed = max(range(2), key=lambda i: len(shards[i]))  # the larger share, killed after two jobs
    common = ["--url", good.grpc_url, "--input", str(tmp_path / "jobs.jsonl")]
    other = _batch(*common, "--out", str(tmp_path / f"shard-{1 - killed}"), "--shard", f"{1 - killed}/2")
    victim = _batch(*common, "--out", str(tmp_path / f"shard-{killed}"), "--shard", f"{killed}/2")
    results = tmp_path / f"shard-{killed}" / "results.jsonl"
    _wait_for(lambda: results.is_file() and results.read_text().count("\n") >= 2 or victim.poll() is not None, 120,
              "two answered jobs")
    victim.kill()
    victim.wait()
    before = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert 2 <= len(before) < len(shards[killed]), "the shard finished before it was killed"
    resumed = _batch(*common, "--out", str(tmp_path / f"shard-{killed}"), "--shard", f"{killed}/2")
    resumed_out, _ = resumed.communicate(timeout=300)
    other_out, _ = other.communicate(timeout=300)
    assert resumed.returncode == 0 and other.returncode == 0, resumed_out + other_out
    assert f"resuming: {len(before)} of {len(shards[killed])} job(s) already done" in resumed_out
    merged = subprocess.run([sys.executable, "-m", "rfad.client.cli", "merge", "--input", str(tmp_path / "jobs.jsonl"),
                             "--out", str(tmp_path / "merged"), str(tmp_path / "shard-0"), str(tmp_path / "shard-1")],
                            capture_output=True, text=True, timeout=60)
    assert merged.returncode == 0 and "14 job(s) from 2 shard(s): 14 done" in merged.stdout, merged.stdout + merged.stderr
    records = [json.loads(line) for line in (tmp_path / "merged" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [job["id"] for job in jobs]  # every product once, in the jobs' order
    assert all(r["status"] == "done" and (tmp_path / "merged" / r["images"][0]).is_file() for r in records)
    # The jobs answered before the kill were not sent again: the server answered each of them once.
    served = answers(good)
    assert all(served[job_id] == [(1, "ok")] for job_id in before)


def test_the_autoscalers_series_exist_for_rfad_pipeline_and_move_under_load(servers, product):
    """The prometheus-adapter rule that `rfad-export k8s` writes reads Triton counters that the
    local server exports for rfad_pipeline, and they grow under concurrent load (queue time too:
    six requests at once on two pipeline instances)."""
    good, _ = servers
    [rule] = adapter_rule("http://prometheus.example:9090")["rules"]["custom"]
    series = sorted(set(re.findall(r"(nv_inference_\w+)\{", rule["metricsQuery"])))
    assert series == ["nv_inference_queue_duration_us", "nv_inference_request_success"]
    assert f'model="{PIPELINE_MODEL}"' in rule["metricsQuery"]
    # Requests of earlier tests (a killed shard's, a drain's) may still run: start from an idle server.
    _wait_for(lambda: busy_requests(fetch_metrics(good.metrics_url)) == 0, 60, "an idle server")
    before = fetch_metrics(good.metrics_url)

    async def load() -> None:
        async with AsyncRfadClient(good.grpc_url, retries=0) as client:
            await asyncio.gather(*(client.generate(product, "an ad", seed=i, steps=4) for i in range(6)))

    asyncio.run(load())

    def counted() -> float:  # the python backend reports a request's statistics after its response
        return metric_sum(fetch_metrics(good.metrics_url), "nv_inference_request_success", model=PIPELINE_MODEL)

    _wait_for(lambda: counted() - metric_sum(before, "nv_inference_request_success", model=PIPELINE_MODEL) >= 6, 30,
              "six requests counted")
    after = fetch_metrics(good.metrics_url)
    for name in series:
        grown = metric_sum(after, name, model=PIPELINE_MODEL) - (metric_sum(before, name, model=PIPELINE_MODEL) or 0)
        assert grown > 0, name
    assert metric_sum(after, "nv_inference_request_success", model=PIPELINE_MODEL) - metric_sum(
        before, "nv_inference_request_success", model=PIPELINE_MODEL) == 6
