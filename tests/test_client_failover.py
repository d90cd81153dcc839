"""The client spreads a batch over two real servers and survives losing one: SIGKILL mid-batch,
every job still succeeds exactly once, and the summary names the endpoint that failed.

The servers run as a secured fleet would (mutual TLS, and every protocol but health restricted to
a header): each endpoint of the pool carries the client's certificate and the header (from the
environment), health checks included. Plain-text connections are the other tests' default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rfad.client.security import HEADERS_ENV
from rfad.export.triton_repo import write_triton_repo
from rfad.serving.launcher import TritonServer
from rfad.serving.security import Restriction, ServerTls

JOBS = 40


@pytest.fixture(scope="module")
def repo(tiny_onnx, tmp_path_factory):
    return write_triton_repo(tiny_onnx, tmp_path_factory.mktemp("repo") / "repo", canvas_size=64)


@pytest.mark.slow
def test_batch_over_two_servers_survives_one_killed_mid_batch(repo, tiny_zoo, pki, tmp_path):
    product = tmp_path / "bottle.png"
    product.write_bytes((tiny_zoo / "samples" / "bottle.png").read_bytes())
    jobs = [{"id": f"job-{i:02d}", "product": product.name, "prompt": "an ad", "seed": i, "steps": 1,
             "max_attempts": 1, "guidance_scale": 1.0} for i in range(JOBS)]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(job) + "\n" for job in jobs))
    out = tmp_path / "out"
    (tmp_path / "value").write_text("fleet-token")
    secured = {"tls": ServerTls.from_files(pki.server_cert, pki.server_key, pki.ca),
               "restriction": Restriction.from_file(None, "rfad-key", tmp_path / "value")}
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, **secured) as first, \
            TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, **secured) as second:
        urls = f"{first.grpc_url},{second.grpc_url}"
        batch = subprocess.Popen([sys.executable, "-m", "rfad.client.cli", "batch", "--url", urls, "--input",
                                  str(tmp_path / "jobs.jsonl"), "--out", str(out), "--concurrency", "4",
                                  "--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key),
                                  "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, HEADERS_ENV: "triton-grpc-protocol-rfad-key=fleet-token"})
        results = out / "results.jsonl"
        deadline = time.monotonic() + 120
        while not (results.is_file() and len(results.read_text().splitlines()) >= 8):
            assert batch.poll() is None, batch.communicate()
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.05)
        os.killpg(second.process.pid, signal.SIGKILL)  # the server and its python stubs, mid-batch
        stdout, stderr = batch.communicate(timeout=300)
    assert batch.returncode == 0, stdout + stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [job["id"] for job in jobs]  # each job once: none lost, none twice
    assert all(r["status"] == "done" and len(r["images"]) == 1 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == JOBS and summary["failed"] == 0
    endpoints = summary["endpoints"]
    assert endpoints[second.grpc_url]["unavailable"] >= 1 and endpoints[first.grpc_url]["unavailable"] == 0
    assert endpoints[first.grpc_url]["requests"] > endpoints[second.grpc_url]["requests"] > 0
    assert f"{second.grpc_url} failed" in stdout
