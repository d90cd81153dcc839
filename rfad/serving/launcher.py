"""Start and stop the Triton Inference Server that the ``nvidia-pytriton`` wheel ships.

:class:`TritonServer` runs the wheel's ``tritonserver`` binary directly, without pytriton's own
Python layer, with the backend folder and environment that
:class:`rfad.serving.triton_install.TritonInstall` prepares (where the files are, and why the
links, PATH and LD_LIBRARY_PATH are set as they are, is told there). The server and its python
stubs form one process group, stopped as a whole; a parent-death signal and an exit hook stop
servers whose owner died or forgot them.

A model that fails to load makes the server exit (``--exit-on-error``); :meth:`TritonServer.start`
turns that into :class:`ServerStartError` naming the model and quoting the server log.
TLS and restricted protocols (:mod:`rfad.serving.security`) are Triton's own; the launcher's
own requests (readiness, the repository index) go over the HTTP endpoint, which has no TLS and
which Triton binds to loopback under TLS, with the restriction's header where it applies. Each
server gets its own drain file (``$RFAD_DRAIN_FILE`` in its temporary folder), so
:meth:`TritonServer.drain` can let the loops in flight finish before it is stopped
(:mod:`rfad.serving.draining` says why Triton's SIGTERM alone does not); draining reads the
metrics page, plain HTTP too. Nothing here is imported by the models themselves; only the
standard library is needed.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from rfad.contract import TRITON_PORTS
from rfad.serving.draining import DRAIN_FILE_ENV, DrainResult, drain
from rfad.serving.security import Restriction, ServerTls
from rfad.serving.start_errors import ServerStartCancelled, ServerStartError
from rfad.serving.triton_install import TritonInstall

# Triton's log line for a model that did not load, and its error lines ("E1124 03:09:07.05 ..."
# and the final "error: creating server: ...").
_FAILED_MODEL = re.compile(r"failed to load '([^']+)' version \d+: (.*)")
_ERROR_LINE = re.compile(r"^(E\d{4} |error: )")
_QUOTE = '"'
LOOPBACK = "127.0.0.1"
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
# The launcher talks to its own server on this machine: never through an http_proxy of the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- Ports -------------------------------------------------------------------------------------

def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now.

    All sockets stay bound until every port is chosen, so the ports differ from each other;
    another process may still take one before the server binds it (the server then fails to
    start with an address-in-use error in its log).
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port that is free on ``host`` right now (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` of ``host`` now (i.e. no process holds it).

    SO_REUSEADDR, as servers (Triton included) set it: connections a stopped server closed
    linger in TIME_WAIT for a minute, which does not stop a new server from binding the port.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --- The server process ------------------------------------------------------------------------

def _parent_death_signal():
    """A pre-exec hook that asks Linux to SIGTERM the server when the thread that started it dies.

    Without it a test run or ``rfad-serve`` killed with SIGKILL would leave an orphaned server
    holding its ports. The libc function is resolved here, in the parent, so the child only
    makes one foreign call between fork and exec. Returns None where prctl is unavailable.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    term = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, term)

    return hook


# Servers started by this process and not yet stopped. At interpreter exit they are stopped:
# the parent-death signal is not set for servers started from a worker thread (see start()),
# and a daemon thread's server would otherwise outlive the program. Strong references: a
# running server that its owner forgot must still be stopped.
_RUNNING: "set[TritonServer]" = set()


@atexit.register
def _stop_servers_at_exit() -> None:
    for server in list(_RUNNING):
        server.stop()


class TritonServer:
    """A local Triton server over the model repository ``repo``; use it as a context manager.

    ``host`` is the address the gRPC, HTTP and metrics endpoints bind (loopback by default).
    A port of 0 picks a free one. The server's stdout and stderr go to ``log_file`` (default: a
    file in a temporary folder that :meth:`stop` removes). ``startup_timeout_s`` bounds :meth:`start`;
    ``exit_timeout_s`` is how long Triton may wait for in-flight requests on SIGTERM before
    :meth:`stop` kills it. ``tls``: TLS (mutual with a CA) on the gRPC endpoint; HTTP then binds
    loopback only, as it has no TLS. ``restriction``: protocols that need a header.
    """

    def __init__(self, repo: str | os.PathLike, host: str = "127.0.0.1", grpc_port: int = TRITON_PORTS["grpc"],
                 http_port: int = TRITON_PORTS["http"], metrics_port: int = TRITON_PORTS["metrics"],
                 log_file: str | os.PathLike | None = None, startup_timeout_s: float = 120.0, exit_timeout_s: float = 10.0,
                 extra_args: tuple[str, ...] = (), tls: ServerTls | None = None, restriction: Restriction | None = None):
        self.repo = Path(repo)
        self.host = host
        self.tls, self.restriction = tls, restriction
        # Under TLS, plain-text HTTP (inference included) must not be reachable from other machines.
        self.http_host = host if tls is None or host in _LOOPBACK_HOSTS else LOOPBACK
        wanted = [grpc_port, http_port, metrics_port]
        chosen = iter(free_ports(sum(1 for p in wanted if not p), self._connect_host))
        self.grpc_port, self.http_port, self.metrics_port = [p or next(chosen) for p in wanted]
        self.log_file = Path(log_file) if log_file is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.startup_s: float | None = None  # seconds from launch to ready, once started
        self.drain_file: Path | None = None  # $RFAD_DRAIN_FILE of the running server
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._default_log = log_file is None
        self._log = None

    # Addresses -------------------------------------------------------------------------------
    @property
    def _connect_host(self) -> str:
        """Where a client on this machine reaches the gRPC and metrics endpoints."""
        return self._reachable(self.host)

    @staticmethod
    def _reachable(host: str) -> str:
        """Where a client on this machine reaches ``host``: a wildcard bind is reached on loopback."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)

    def _address(self, port: int, host: str | None = None) -> str:
        host = self._connect_host if host is None else self._reachable(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC endpoint, as tritonclient.grpc and :class:`rfad.client.RfadClient` take it."""
        return self._address(self.grpc_port)

    @property
    def http_url(self) -> str:
        """host:port of the HTTP/REST endpoint, as tritonclient.http takes it."""
        return self._address(self.http_port, self.http_host)

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus metrics page."""
        return f"http://{self._address(self.metrics_port)}/metrics"

    # Lifecycle -------------------------------------------------------------------------------
    def command(self, backend_directory: Path, install: TritonInstall) -> list[str]:
        """The server's argument list (never run through a shell)."""
        return [str(install.binary),
                "--model-repository", str(self.repo.resolve()),
                "--backend-directory", str(backend_directory),
                "--model-control-mode", "none",
                "--exit-on-error", "true",
                "--strict-readiness", "true",
                # The configs are written whole (rfad-export triton-repo); completing them would start
                # every python model's stub an extra time (the pipeline's imports torch): 11 s -> 5 s.
                "--disable-auto-complete-config",
                "--exit-timeout-secs", str(max(1, int(self.exit_timeout_s))),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
                "--http-address", self.http_host, "--http-port", str(self.http_port),
                "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
                "--allow-metrics", "true", "--allow-gpu-metrics", "false",
                "--log-verbose", "0",
                *(self.tls.triton_args() if self.tls else ()),
                *(self.restriction.triton_args() if self.restriction else ()),
                *self.repository_args(), *self.extra_args]

    def repository_args(self) -> list[str]:
        """The python backend's flags the repository was written for (its ``deployment.json``:
        the deployment profile's shared memory), unless ``extra_args`` set python backend flags."""
        record = self.repo / "deployment.json"
        if not record.is_file() or any(arg.startswith("--backend-config=python,") for arg in self.extra_args):
            return []
        try:
            return [str(arg) for arg in json.loads(record.read_text()).get("server_args", [])]
        except (OSError, ValueError, AttributeError) as exc:
            raise ServerStartError(f"{record}: unreadable ({exc}); rewrite the repository with rfad-export triton-repo") from None

    def start(self, cancel: threading.Event | None = None) -> "TritonServer":
        """Launch the server and wait until it is ready; returns ``self``.

        Raises :class:`ServerStartError` when the server exits while starting (the message names
        the models that failed to load and quotes the log) or is not ready within
        ``startup_timeout_s``, :class:`TritonNotInstalledError` when the wheel is missing, and
        :class:`ServerStartCancelled` when ``cancel`` is set first. The server is stopped in
        every one of those cases.
        """
        if self.process is not None:
            raise RuntimeError("this TritonServer was already started; create a new one")
        if not self.repo.is_dir():
            raise ServerStartError(f"model repository {self.repo} is not a folder "
                                   f"(write one with `rfad-export triton-repo`)")
        install = TritonInstall.locate()
        self._workdir = tempfile.TemporaryDirectory(prefix="rfad-triton-")
        workdir = Path(self._workdir.name)
        backends = install.backend_directory(workdir / "backends")
        self._default_log = self.log_file is None
        if self._default_log:
            self.log_file = workdir / "tritonserver.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_file, "wb")
        self.drain_file = workdir / "draining"
        environment = {**install.environment(), DRAIN_FILE_ENV: str(self.drain_file)}
        # The death signal is tied to the starting THREAD, not the process: set it only from the
        # main thread, or a server started from a worker thread would die with that thread.
        hook = _parent_death_signal() if threading.current_thread() is threading.main_thread() else None
        started = time.monotonic()
        # start_new_session: the server and its python stubs form one process group, which
        # stop() can kill as a whole; and Ctrl-C in a terminal reaches only rfad-serve, which
        # then stops the server in order instead of both receiving SIGINT.
        self.process = subprocess.Popen(self.command(backends, install), stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, env=environment, cwd=workdir,
                                        start_new_session=True, preexec_fn=hook)
        _RUNNING.add(self)
        try:
            self._wait_until_ready(cancel)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _http(self, method: str, path: str, protocol: str, timeout_s: float) -> bytes:
        """One request of the launcher's own to the HTTP endpoint (with the restriction's header
        when ``protocol`` is restricted); raises urllib's errors."""
        headers = self.restriction.http_headers(protocol) if self.restriction else {}
        data = b"{}" if method == "POST" else None
        request = urllib.request.Request(f"http://{self.http_url}{path}", data=data, headers=headers, method=method)
        with _DIRECT.open(request, timeout=timeout_s) as response:
            return response.read()

    def _wait_until_ready(self, cancel: threading.Event | None) -> None:
        # One fresh HTTP request per poll: no connection state between polls, so no reconnect
        # backoff (a gRPC channel's backoff grew to tens of seconds while the models loaded, and
        # readiness was seen up to ~20 s late while clients were already being served).
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.has_exited():
                code = self._reap()
                raise self._exit_error(code)
            if cancel is not None and cancel.is_set():
                raise ServerStartCancelled("start-up cancelled before the server was ready")
            try:
                self._http("GET", "/v2/health/ready", "health", timeout_s=1.0)
                return  # 200: ready (Triton answers 400 while models load)
            except OSError:  # not listening yet (URLError), or 400 while loading (HTTPError): try again
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                raise ServerStartError(f"Triton was not ready after {self.startup_timeout_s:.0f} s"
                                       f"{self._log_hint()}; the end of its log:\n{tail}", (), tail)
            time.sleep(0.1)

    def _log_hint(self) -> str:
        return "" if self._default_log else f" (log: {self.log_file})"

    def _exit_error(self, code: int) -> ServerStartError:
        """The error for a server that exited while starting, read from its log.

        Triton logs one ``failed to load '<model>' version <n>: <reason>`` line per failed
        model, then prints its option tables and ``error: creating server: ...``; the message
        quotes the failure lines (and every other error line), not the tables.
        """
        text = self.log_text()
        failures = _FAILED_MODEL.findall(text)
        failed = tuple(dict.fromkeys(name for name, _ in failures))
        errors = [line for line in text.splitlines() if _ERROR_LINE.match(line)]
        tail = "\n".join(errors) if errors else self.log_tail()
        if failures:
            # Triton quotes each log message; the closing quote is not part of the reason.
            reasons = "; ".join(f"{name}: {reason.rstrip(_QUOTE)}" for name, reason in dict(failures).items())
            head = f"model{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed to load ({reasons})"
        else:
            head = "no model reported a load failure"
        return ServerStartError(f"Triton exited with code {code} while starting: {head}{self._log_hint()}. "
                                f"Server errors:\n{tail}", failed, tail)

    def has_exited(self) -> bool:
        """Whether the server process has exited (without reaping it, so its process group stays addressable)."""
        if self.process is None:
            return False
        if self.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped by someone else
            return True
        return info is not None

    def _reap(self) -> int:
        """SIGKILL the server's process group, then collect the server's exit code.

        Once the server has exited this removes leftover python stubs; after a SIGTERM that
        timed out it kills the server too. Either way the server is not reaped yet (see
        :meth:`has_exited`), so its process-group id cannot have been reused by a stranger.
        """
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.returncode = self.process.wait()
        return self.returncode

    def drain(self, timeout_s: float, poll_s: float = 0.25, refusing=None) -> DrainResult:
        """Refuse new ``rfad_pipeline`` requests (UNAVAILABLE: clients go elsewhere; ``refusing`` is
        called once they are) and wait up to ``timeout_s`` until none is running or queued; call
        :meth:`stop` afterwards."""
        if self.process is None or self.drain_file is None:
            raise RuntimeError("drain(): the server was not started")
        return drain(self.metrics_url, self.drain_file, timeout_s, poll_s, refusing)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM the server, wait up to ``timeout_s`` (default ``exit_timeout_s`` + 5 s), then SIGKILL.

        Idempotent. Returns the server's exit code (None if it was never started). Removes the
        temporary folder, and with it the default log file.
        """
        if self.process is not None and self.returncode is None:
            if not self.has_exited():
                self.process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + (self.exit_timeout_s + 5.0 if timeout_s is None else timeout_s)
                while not self.has_exited() and time.monotonic() < deadline:
                    time.sleep(0.05)
            self._reap()  # SIGKILLs the group: the server if it is still running, stray stubs otherwise
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        _RUNNING.discard(self)
        return self.returncode

    # Introspection ---------------------------------------------------------------------------
    def log_text(self) -> str:
        """The server log so far ('' before start or once a temporary log was removed)."""
        if self._log is not None:
            self._log.flush()
        if self.log_file is None or not self.log_file.is_file():
            return ""
        return self.log_file.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def models(self) -> list[dict]:
        """The repository index of the running server: ``[{"name", "version", "state", "reason"}]`` sorted by name."""
        index = json.loads(self._http("POST", "/v2/repository/index", "model-repository", timeout_s=10.0))
        return sorted(({"name": m["name"], "version": m.get("version", ""), "state": m.get("state", ""),
                        "reason": m.get("reason", "")} for m in index), key=lambda m: m["name"])

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self.process is None else ("stopped" if self.returncode is not None else "running")
        return f"TritonServer({str(self.repo)!r}, grpc={self.grpc_url}, http={self.http_url}, {state})"
