"""The local Triton launcher (rfad.serving.launcher, triton_install) and ``rfad-serve``, on a real server.

The server is the nvidia-pytriton wheel's ``tritonserver``; the repositories are small python
backend models written here, so these tests do not depend on the exported rfad models.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from rfad.serving.launcher import TritonServer, free_ports, port_is_free
from rfad.serving.start_errors import ServerStartCancelled, ServerStartError, TritonNotInstalledError
from rfad.serving.triton_install import TritonInstall

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None,
                                reason='the nvidia-pytriton wheel is not installed (pip install "rfad[serve]")')

ADD_ONE_CONFIG = """\
name: "add_one"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [
  { name: "y" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "prefix" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

# y = x + 1, and the sys.prefix of the interpreter the stub runs (to check which Python serves).
ADD_ONE_MODEL = '''\
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if (x < 0).any():
                error = pb_utils.TritonError(f"x must not be negative, got {x.min()}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            prefix = np.array([sys.prefix.encode()], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", (x + 1).astype(np.float32)),
                                                         pb_utils.Tensor("prefix", prefix)]))
        return responses
'''


def write_model(repo, name: str, config: str, model_py: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config.replace('"add_one"', f'"{name}"'))
    (repo / name / "1" / "model.py").write_text(model_py)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    write_model(root, "add_one", ADD_ONE_CONFIG, ADD_ONE_MODEL)
    return root


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    """One server for the module. Its teardown checks what stop() promises (a second server
    just for that would cost another start-up and shutdown): exit code 0, no process of its
    group left (python stubs included), ports free."""
    log = tmp_path_factory.mktemp("log") / "server.log"
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, log_file=log, exit_timeout_s=2) as running:
        yield running
    assert running.returncode == 0 and running.stop() == 0  # stop() is idempotent
    assert not process_group_alive(running.process.pid)
    assert port_is_free(running.grpc_port) and port_is_free(running.http_port)


def add_one(server, values):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("x", [len(values)], "FP32")
    tensor.set_data_from_numpy(np.asarray(values, dtype=np.float32))
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        return client.infer("add_one", [tensor], client_timeout=30)
    finally:
        client.close()


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_is_ready_and_answers_over_grpc_and_http(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("add_one")
    client.close()
    assert server.startup_s is not None and server.startup_s < 60
    assert server.models() == [{"name": "add_one", "version": "1", "state": "READY", "reason": ""}]

    result = add_one(server, [1.0, 2.5, -0.0])
    np.testing.assert_array_equal(result.as_numpy("y"), np.array([2.0, 3.5, 1.0], dtype=np.float32))
    # The stub runs this interpreter's environment (PATH), not whatever python3 comes first otherwise.
    assert result.as_numpy("prefix")[0].decode() == sys.prefix

    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert b"nv_inference_request_success" in response.read()


def test_model_error_reaches_the_client_and_the_server_keeps_serving(server):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        add_one(server, [3.0, -2.0])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert "x must not be negative, got -2.0" in info.value.message()
    np.testing.assert_array_equal(add_one(server, [41.0]).as_numpy("y"), [42.0])


def test_server_binds_loopback_only(server):
    # Every endpoint is held by the server on 127.0.0.1 ...
    assert not any(port_is_free(port) for port in (server.grpc_port, server.http_port, server.metrics_port))
    assert "--grpc-address" in server.process.args
    addresses = [server.process.args[i + 1] for i, a in enumerate(server.process.args) if a.endswith("-address")]
    assert addresses == ["127.0.0.1"] * 3


def test_broken_model_fails_start_up_naming_the_model(repo, tmp_path):
    broken = tmp_path / "broken_repo"
    write_model(broken, "broken", ADD_ONE_CONFIG, "def execute(:\n    pass\n")
    server = TritonServer(broken, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert time.monotonic() - started < 60
    assert info.value.failed_models == ("broken",)
    message = str(info.value)
    assert "broken failed to load" in message and "SyntaxError" in message
    # Nothing is left behind: the process group is gone and the ports are free again.
    assert server.returncode not in (None, 0)
    assert not process_group_alive(server.process.pid)
    assert port_is_free(server.grpc_port) and port_is_free(server.http_port)


def test_python_models_run_in_stub_processes_of_the_server_group(server):
    # stop() relies on this: killing the group takes the stubs with the server.
    stubs = subprocess.run(["pgrep", "-g", str(server.process.pid), "-f", "triton_python_backend_stub"],
                           capture_output=True, text=True).stdout.split()
    assert len(stubs) == 1


def test_start_can_be_cancelled(repo):
    cancel = threading.Event()
    cancel.set()
    server = TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0)
    with pytest.raises(ServerStartCancelled):
        server.start(cancel=cancel)
    assert server.returncode is not None and not process_group_alive(server.process.pid)


def test_missing_stub_and_missing_repository_are_explained(tmp_path):
    with pytest.raises(TritonNotInstalledError) as info:
        TritonInstall.locate(python_version="2.7")
    message = str(info.value)
    assert "python_backend_stubs/2.7/triton_python_backend_stub" in message
    assert 'pip install "rfad[serve]"' in message and "3.11" in message
    install = TritonInstall.locate()
    assert install.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    env = install.environment({"PATH": "/usr/bin"})
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert install.libs is None or str(install.libs) in env["LD_LIBRARY_PATH"].split(os.pathsep)

    with pytest.raises(ServerStartError, match="is not a folder"):
        TritonServer(tmp_path / "nowhere", grpc_port=0, http_port=0, metrics_port=0).start()


def test_free_ports_are_distinct_and_free():
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(port_is_free(p) for p in ports)
    server = TritonServer(".", grpc_port=0, http_port=0, metrics_port=9999)
    assert server.metrics_port == 9999 and len({server.grpc_port, server.http_port, 9999}) == 3


def test_rfad_serve_prints_endpoints_and_stops_on_sigterm(repo, tmp_path):
    grpc_port, http_port, metrics_port = free_ports(3)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "rfad.serving.cli", "--repo", str(repo), "--grpc-port", str(grpc_port),
               "--http-port", str(http_port), "--metrics-port", str(metrics_port), "--log", str(log)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        endpoints = process.stdout.readline()
        assert f"gRPC 127.0.0.1:{grpc_port}" in endpoints and f"HTTP 127.0.0.1:{http_port}" in endpoints, endpoints
        assert "add_one v1 READY" in process.stdout.readline()
        assert str(log) in process.stdout.readline()
        assert not port_is_free(grpc_port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "stopped (Triton exit code 0)" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert port_is_free(grpc_port) and port_is_free(http_port) and port_is_free(metrics_port)
    assert "successfully loaded 'add_one'" in log.read_text()


def test_rfad_serve_reports_a_broken_repository_in_one_error(tmp_path):
    broken = tmp_path / "repo"
    write_model(broken, "broken", ADD_ONE_CONFIG, "raise RuntimeError('weights missing: /models/unet.onnx')\n")
    grpc_port, http_port, metrics_port = free_ports(3)
    result = subprocess.run([sys.executable, "-m", "rfad.serving.cli", "--repo", str(broken),
                             "--grpc-port", str(grpc_port), "--http-port", str(http_port),
                             "--metrics-port", str(metrics_port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "broken failed to load" in result.stderr and "weights missing: /models/unet.onnx" in result.stderr


def test_help_says_how_to_expose_the_server():
    result = subprocess.run([sys.executable, "-m", "rfad.serving.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "127.0.0.1" in result.stdout and "--host 0.0.0.0" in result.stdout
    assert "firewall" in result.stdout
