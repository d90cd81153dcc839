"""Start and stop the Triton Inference Server that the ``nvidia-pytriton`` wheel ships.

The wheel carries a complete ``tritonserver`` (2.51, python backend only) and a python-backend
stub per Python version. The stub finds its Python environment through ``python3`` on PATH
(PYTHONPATH is ignored), so the server is started with this interpreter's ``bin`` folder first
on PATH; the backend folder handed to the server holds the python backend with the stub that
matches the running Python. A model that fails to load makes the server exit: that surfaces
here as :class:`ServerStartError` with the end of the server log.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = 'install the serving extra: pip install "rfad[serve]" && pip install --no-deps nvidia-pytriton'


class ServerStartError(RuntimeError):
    """The server binary is missing, or the server exited or did not become ready in time."""


def pytriton_root() -> Path:
    """The ``pytriton/tritonserver`` folder of the installed wheel (found without importing pytriton)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(f"Triton server not found: the nvidia-pytriton wheel is not installed ({INSTALL_HINT})")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServerStartError(f"Triton server binary missing at {root / 'bin' / 'tritonserver'} ({INSTALL_HINT})")
    return root


def backend_directory(root: Path, into: Path) -> Path:
    """``into/python/`` with the python backend and the stub of this Python version (links)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerStartError(f"no python backend stub for Python {version} in {stub.parent.parent} "
                               f"(this Triton build has stubs for 3.8-3.13)")
    python = into / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (root / "backends" / "python" / "libtriton_python.so",
                   root / "backends" / "python" / "triton_python_backend_utils.py", stub):
        if not source.is_file():
            raise ServerStartError(f"python backend file missing: {source} ({INSTALL_HINT})")
        link = python / source.name
        if not link.exists():
            link.symlink_to(source)
    return into


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, so a killed
    rfad-serve (or test) never leaves an orphaned server holding the ports."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TritonServer:
    """A local Triton server over ``repo``; ports 0 pick free ones. Use as a context manager."""

    repo: Path
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    log_file: Path | None = None
    startup_timeout_s: float = 120.0
    process: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.repo = Path(self.repo)
        self.grpc_port = self.grpc_port or free_port()
        self.http_port = self.http_port or free_port()
        self.metrics_port = self.metrics_port or free_port()

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self, backends: Path) -> list[str]:
        return [str(pytriton_root() / "bin" / "tritonserver"), "--model-repository", str(self.repo.resolve()),
                "--backend-directory", str(backends), "--model-control-mode", "none",
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
                "--http-address", self.host, "--http-port", str(self.http_port),
                "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
                "--allow-metrics", "true", "--log-verbose", "0", "--exit-on-error", "true"]

    def start(self) -> "TritonServer":
        if not self.repo.is_dir():
            raise ServerStartError(f"--repo {self.repo} is not a folder (write one with `rfad-export triton-repo`)")
        self._tmp = tempfile.TemporaryDirectory(prefix="rfad-triton-")
        backends = backend_directory(pytriton_root(), Path(self._tmp.name) / "backends")
        self.log_file = self.log_file or Path(self._tmp.name) / "server.log"
        env = dict(os.environ)
        # The python-backend stub runs `python3` from PATH: make it this environment's.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        # The stub links libpython3.X.so dynamically; without this it may pick up another
        # build of the same minor version (e.g. the distribution's) whose C API lacks symbols
        # that this interpreter's extension modules need.
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir:
            env["LD_LIBRARY_PATH"] = libdir + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        self._log = open(self.log_file, "wb")
        self.process = subprocess.Popen(self.command(backends), stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"Triton exited (code {self.process.returncode}) while starting:\n{self.log_tail()}")
            try:
                if client.is_server_ready(client_timeout=1.0):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"Triton was not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        if self.log_file is None or not Path(self.log_file).is_file():
            return ""
        return "\n".join(Path(self.log_file).read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
