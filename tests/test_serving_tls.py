"""TLS, mutual TLS and restricted protocols on a real local Triton, with certificates made in the
test (the ``pki`` fixture): who is served, who is refused and how, and that no secret leaks.

Two servers over the tiny repository: ``secured`` (TLS, every protocol but health restricted to a
header, bound to 0.0.0.0) through :class:`TritonServer`, and ``mutual`` (mutual TLS and the same
restriction) through the ``rfad-serve`` command, which the ``rfad-client`` command then calls.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from rfad.client import AccessDeniedError, AsyncRfadClient, RfadClient, UnavailableError
from rfad.client.cli import main as client_cli
from rfad.client.security import HEADERS_ENV, ChannelSecurity
from rfad.client.transport import channel_args
from rfad.export.triton_repo import write_triton_repo
from rfad.serving.cli import main as serve_cli
from rfad.serving.launcher import TritonServer, free_ports
from rfad.serving.security import DEFAULT_RESTRICTED, Restriction, ServerTls

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None,
                                reason='the nvidia-pytriton wheel is not installed (pip install "rfad[serve]")')

KEY = "rfad-key"
VALUE = "s3cret-Value_42"
HEADER = {f"triton-grpc-protocol-{KEY}": VALUE}


@pytest.fixture(scope="module")
def repo(tiny_onnx, tmp_path_factory):
    return write_triton_repo(tiny_onnx, tmp_path_factory.mktemp("tls") / "repo", canvas_size=64)


@pytest.fixture(scope="module")
def product(tiny_zoo):
    return (tiny_zoo / "samples" / "bottle.png").read_bytes()


@pytest.fixture(scope="module")
def value_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "value"
    path.write_text(VALUE + "\n")
    return path


@pytest.fixture(scope="module")
def secured(repo, pki, value_file):
    tls = ServerTls.from_files(pki.server_cert, pki.server_key)
    restriction = Restriction.from_file(None, KEY, value_file)
    with TritonServer(repo, host="0.0.0.0", grpc_port=0, http_port=0, metrics_port=0, tls=tls,
                      restriction=restriction) as server:
        yield server


def _listening(port: int) -> set[str]:
    """The local addresses listening on TCP ``port`` (IPv4 and IPv6, from /proc/net/tcp and tcp6)."""
    addresses = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                # The kernel prints each 32-bit word in host (little-endian) order.
                raw = b"".join(bytes.fromhex(host[i:i + 8])[::-1] for i in range(0, len(host), 8))
                addresses.add(socket.inet_ntop(family, raw))
    return addresses


def test_a_tls_client_with_the_header_is_served_sync_and_asyncio(secured, pki, product):
    with RfadClient(secured.grpc_url, ca=pki.ca, headers=HEADER, retries=0) as client:
        assert client.health()["model_ready"]
        result = client.generate(product, "an ad", steps=1, max_attempts=1, guidance_scale=1.0, threshold=0.0)
        assert result.attempts == 1 and len(result.images) == 1

    async def judge():
        async with AsyncRfadClient(secured.grpc_url, ca=pki.ca, headers=HEADER, retries=0) as client:
            return await client.judge([result.images[0]], product)

    verdict = asyncio.run(judge())
    assert len(verdict.probabilities) == 1 and len(verdict.probabilities[0]) == 5


def test_a_plain_client_is_refused(secured, product):
    with RfadClient(secured.grpc_url, headers=HEADER, retries=0) as client:
        state = client.health(timeout_s=3)
        assert not state["ready"] and "UNAVAILABLE" in state["error"]
        with pytest.raises(UnavailableError):
            client.generate(product, "an ad", steps=1, max_attempts=1)


def test_a_client_trusting_another_ca_or_name_is_refused_at_once(secured, pki, product):
    # Three retries 5 s apart would take 35 s: a certificate refusal is not retried.
    for security in ({"ca": pki.other_ca}, {"ca": pki.ca, "tls_server_name": "rfad.example"}):
        started = time.monotonic()
        with RfadClient(secured.grpc_url, headers=HEADER, retries=3, backoff_s=5.0, **security) as client:
            with pytest.raises(AccessDeniedError) as info:
                client.generate(product, "an ad", steps=1, max_attempts=1)
            assert client.endpoints.summary()[secured.grpc_url]["unavailable"] == 0
        assert info.value.status == "UNAUTHENTICATED" and time.monotonic() - started < 5, info.value
    # The name the certificate carries, given for an address it does not name, is accepted.
    with RfadClient(secured.grpc_url, ca=pki.ca, headers=HEADER, tls_server_name="localhost") as client:
        assert client.is_ready()
    # rfad-client says it in one line (gRPC's own log line about the handshake is not shown).
    command = subprocess.run([sys.executable, "-m", "rfad.client.cli", "health", "--url", secured.grpc_url,
                              "--ca", str(pki.other_ca)], capture_output=True, text=True, timeout=120)
    assert command.returncode == 1 and "UNAUTHENTICATED" in command.stderr
    assert len(command.stderr.strip().splitlines()) == 1, command.stderr


def test_dns_discovery_verifies_the_server_name_on_every_address_it_finds(secured, pki, product):
    """dns:/// connects to addresses (a headless Service's pod IPs) the certificate does not name:
    each discovered endpoint gets the CA, the headers and the name to verify (tls_server_name)."""
    port = secured.grpc_port
    pods = [f"127.0.0.1:{port}", f"127.0.0.2:{port}"]  # both reach the server bound to 0.0.0.0

    def headless_service(host, service_port):  # what cluster DNS answers: one address per pod
        assert (host, service_port) == ("rfad-pods.test", port)
        return pods

    with RfadClient(f"dns:///rfad-pods.test:{port}", ca=pki.ca, headers=HEADER, tls_server_name="localhost",
                    retries=0, resolver=headless_service) as client:
        for seed in range(2):
            client.generate(product, "an ad", seed=seed, steps=1, max_attempts=1, guidance_scale=1.0, threshold=0.0)
        summary = client.endpoints.summary()
    assert [summary[pod]["requests"] for pod in pods] == [1, 1], summary
    # Without the name, 127.0.0.2 (not in the certificate) is a refusal, not a retry.
    with RfadClient(f"dns:///rfad-pods.test:{port}", ca=pki.ca, headers=HEADER, retries=3, backoff_s=5.0,
                    resolver=lambda host, service_port: pods[1:]) as client:
        started = time.monotonic()
        with pytest.raises(AccessDeniedError) as info:
            client.generate(product, "an ad", steps=1, max_attempts=1)
        assert info.value.status == "UNAUTHENTICATED" and time.monotonic() - started < 5, info.value


def test_a_restricted_protocol_is_refused_without_its_header_and_served_with_it(secured, pki, product):
    for headers in ({}, {f"triton-grpc-protocol-{KEY}": "wrong"}, {KEY: VALUE}):
        with RfadClient(secured.grpc_url, ca=pki.ca, headers=headers, retries=3) as client:
            assert client.health()["model_ready"]  # health stays open, for probes
            with pytest.raises(AccessDeniedError, match=f"expecting header 'triton-grpc-protocol-{KEY}'") as info:
                client.generate(product, "an ad", steps=1, max_attempts=1)
            assert info.value.status == "PERMISSION_DENIED"
    # HTTP: the same groups, the header under its own name; the launcher's own calls pass.
    metadata = f"http://{secured.http_url}/v2/models/rfad_pipeline"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(metadata, timeout=10)
    assert refused.value.code == 403
    allowed = urllib.request.urlopen(urllib.request.Request(metadata, headers={KEY: VALUE}), timeout=10)
    assert json.loads(allowed.read())["name"] == "rfad_pipeline"
    assert urllib.request.urlopen(f"http://{secured.http_url}/v2/health/ready", timeout=10).status == 200
    assert {"rfad_judge", "rfad_pipeline"} <= {m["name"] for m in secured.models()}
    with RfadClient(secured.grpc_url, ca=pki.ca, headers=HEADER) as client:  # still serving
        assert client.generate(product, "an ad", steps=1, max_attempts=1, threshold=0.0).attempts == 1


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's /proc/net/tcp")
def test_under_tls_only_grpc_and_metrics_listen_beyond_loopback(secured, pki):
    wildcard = {"0.0.0.0", "::"}  # gRPC binds 0.0.0.0 as a dual-stack [::] socket
    assert _listening(secured.grpc_port) & wildcard and _listening(secured.metrics_port) & wildcard
    assert _listening(secured.http_port) == {"127.0.0.1"}  # Triton's HTTP has no TLS
    # Triton gets the key's path, never its content (the header's value has no other way in).
    arguments = " ".join(secured.process.args)
    assert str(pki.server_key) in arguments and pki.server_key.read_text().splitlines()[1] not in arguments


def test_hostile_input_is_unchanged_with_tls_on(secured, pki, product):
    from test_reliability import _hostile_images, _obj

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    connection = ChannelSecurity.create(ca=pki.ca, headers=HEADER).connect(grpcclient, secured.grpc_url,
                                                                            channel_args(0.5))
    outcomes = {}
    for name, data in _hostile_images().items():
        inputs = []
        for tensor_name, (datatype, array) in {"product_image": _obj(data), "prompt": _obj(b"ad"),
                                               "steps": ("INT32", np.array([1], np.int32))}.items():
            tensor = grpcclient.InferInput(tensor_name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            connection.infer("rfad_pipeline", inputs, client_timeout=120)
            outcomes[name] = "ok"
        except InferenceServerException as exc:
            outcomes[name] = str(exc.status()).removeprefix("StatusCode.")
    connection.close()
    assert outcomes == {"palette": "ok", **{n: "INVALID_ARGUMENT" for n in outcomes if n != "palette"}}, outcomes
    with RfadClient(secured.grpc_url, ca=pki.ca, headers=HEADER) as client:
        assert client.is_ready()


# ----------------------------------------------------------------------------- rfad-serve, rfad-client


@pytest.fixture(scope="module")
def mutual(repo, pki, value_file, tmp_path_factory):
    """``rfad-serve`` with mutual TLS and the restriction; yields (gRPC url, its stdout lines, its log)."""
    grpc_port, http_port, metrics_port = free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "server.log"
    command = [sys.executable, "-m", "rfad.serving.cli", "--repo", str(repo), "--grpc-port", str(grpc_port),
               "--http-port", str(http_port), "--metrics-port", str(metrics_port), "--log", str(log),
               "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-ca", str(pki.ca),
               "--restrict-header", KEY, "--restrict-value-file", str(value_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        assert "(mutual TLS)" in lines[0], lines
        yield f"127.0.0.1:{grpc_port}", lines, log
        process.send_signal(signal.SIGTERM)
        lines.append(process.communicate(timeout=60)[0])
        assert process.returncode == 0, lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_mutual_tls_needs_a_client_certificate_its_ca_signed(mutual, pki):
    url, _, _ = mutual
    for security in ({"ca": pki.ca}, {"ca": pki.ca, "cert": pki.rogue_cert, "key": pki.rogue_key}):
        with RfadClient(url, headers=HEADER, retries=0, **security) as client:
            state = client.health(timeout_s=3)
            assert not state["ready"] and "UNAVAILABLE" in state["error"], state
    with RfadClient(url, ca=pki.ca, cert=pki.client_cert, key=pki.client_key, headers=HEADER) as client:
        assert client.is_ready()


def test_rfad_client_speaks_mutual_tls_with_headers_from_flags_or_the_environment(mutual, pki, tiny_zoo, tmp_path):
    url, _, _ = mutual
    tls = ["--url", url, "--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]
    runner = CliRunner()
    result = runner.invoke(client_cli, ["generate", *tls, "--header", f"triton-grpc-protocol-{KEY}={VALUE}",
                                        "--product", str(tiny_zoo / "samples" / "bottle.png"), "--prompt", "an ad",
                                        "--steps", "1", "--max-attempts", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "image-0.png").is_file()
    environment = {HEADERS_ENV: f"triton-grpc-protocol-{KEY}={VALUE}"}
    assert runner.invoke(client_cli, ["health", *tls], env=environment).exit_code == 0
    # The generate call of a restricted protocol without the header: one line naming the header.
    refused = runner.invoke(client_cli, ["generate", *tls, "--product", str(tiny_zoo / "samples" / "bottle.png"),
                                         "--prompt", "an ad", "--out", str(tmp_path / "no")])
    assert refused.exit_code == 1 and "PERMISSION_DENIED" in refused.output
    assert f"triton-grpc-protocol-{KEY}" in refused.output and "Traceback" not in refused.output


def test_rfad_serve_says_what_is_secured_and_never_shows_a_secret(mutual, pki, value_file):
    _, lines, log = mutual
    assert "gRPC 127.0.0.1:" in lines[0] and "(mutual TLS)" in lines[0]
    assert lines[1].startswith(f"restricted: {', '.join(DEFAULT_RESTRICTED)} need header "
                               f"'triton-grpc-protocol-{KEY}' (gRPC) or '{KEY}' (HTTP); open: health")
    assert "rfad_pipeline v1 READY" in lines[2], lines  # the served repository's models, listed
    key_body = pki.server_key.read_text().splitlines()[1]
    for text in ("".join(lines), log.read_text()):
        assert VALUE not in text and key_body not in text


@pytest.mark.parametrize("flags, message", [
    (["--tls-cert", "{server_cert}"], "--tls-cert and --tls-key go together"),
    (["--tls-ca", "{ca}"], "--tls-ca (mutual TLS) needs --tls-cert and --tls-key"),
    (["--tls-cert", "{server_cert}", "--tls-key", "{client_key}"], "not the private key of --tls-cert"),
    (["--tls-cert", "{server_key}", "--tls-key", "{server_key}"], "no PEM certificate in it"),
    (["--tls-cert", "{server_cert}", "--tls-key", "{server_cert}"], "no PEM private key in it"),
    (["--restrict-header", KEY], "--restrict-header and --restrict-value-file go together"),
    (["--restrict-header", "Bad Key", "--restrict-value-file", "{value}"], "is not a lowercase header name"),
    (["--restrict-header", KEY, "--restrict-value-file", "{spaced}"], "printable ASCII without spaces"),
    (["--restrict-header", KEY, "--restrict-value-file", "{value}", "--restrict", "inference,admin"],
     "admin is not a protocol Triton can restrict"),
])
def test_rfad_serve_refuses_bad_security_flags_without_quoting_a_secret(repo, pki, value_file, tmp_path, flags,
                                                                         message):
    spaced = tmp_path / "spaced"
    spaced.write_text(f"{VALUE} and more\n")
    paths = {"server_cert": pki.server_cert, "server_key": pki.server_key, "client_key": pki.client_key,
             "ca": pki.ca, "value": value_file, "spaced": spaced}
    result = CliRunner().invoke(serve_cli, ["--repo", str(repo), *[f.format(**paths) for f in flags]])
    assert result.exit_code == 2 and message in result.output, result.output
    secrets = [VALUE] + [path.read_text().splitlines()[1] for path in (pki.server_key, pki.client_key)]
    assert not any(secret in result.output for secret in secrets)


@pytest.mark.parametrize("flags, message", [
    (["--cert", "{client_cert}"], "--cert and --key go together"),
    (["--cert", "{client_cert}", "--key", "{server_key}"], "not the private key of --cert"),
    (["--ca", "{client_key}"], "no PEM certificate in it"),
    (["--header", "authorization"], "expected KEY=VALUE"),
    (["--header", "Bad Key=secret-token"], "not a header name"),
    (["--header", "authorization=Bearer s\u00e9cret-token"], "--header authorization: the value must be"),
])
def test_rfad_client_refuses_bad_security_flags_without_quoting_a_secret(pki, flags, message):
    paths = {"client_cert": pki.client_cert, "server_key": pki.server_key, "client_key": pki.client_key}
    result = CliRunner().invoke(client_cli, ["health", *[f.format(**paths) for f in flags]])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "secret-token" not in result.output and "Traceback" not in result.output
    assert not any(path.read_text().splitlines()[1] in result.output for path in (pki.server_key, pki.client_key))
