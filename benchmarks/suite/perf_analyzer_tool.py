"""Triton's perf_analyzer: find it (or install it from the tritonclient 2.51.0 wheel), run it, read its report.

Where it comes from: the ``perf-analyzer`` package on PyPI is a placeholder, and tritonclient
wheels after 2.51 carry no binary; the tritonclient **2.51.0** wheel (the client release of the
server that nvidia-pytriton ships) carries a working one at
``tritonclient-2.51.0.data/data/bin/perf_analyzer``. It needs ``libb64.so.0d`` and
``libcudart.so.12``, which the installed nvidia-pytriton wheel holds under hashed names in its
``nvidia_pytriton.libs`` folder; they are linked under their plain names into a folder put on
``LD_LIBRARY_PATH`` for the run (the CUDA runtime is only loaded, no GPU is needed).

:func:`locate` looks at ``$PERF_ANALYZER``, then ``perf_analyzer`` on PATH, then
``benchmarks/.cache/perf_analyzer/``, and otherwise installs it there with
``pip download --no-deps --only-binary=:all: tritonclient==2.51.0`` (the package index pip is
already configured with; nothing else is fetched). Where none of that works it raises
:class:`PerfAnalyzerUnavailable` saying why, and the benchmark records a skipped row.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import CACHE

WHEEL_VERSION = "2.51.0"
WHEEL_BINARY = f"tritonclient-{WHEEL_VERSION}.data/data/bin/perf_analyzer"
TOOL_DIR = CACHE / "perf_analyzer"
# Plain name the binary asks for -> the hashed file name in nvidia_pytriton.libs.
LIBRARIES = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


class PerfAnalyzerUnavailable(RuntimeError):
    """perf_analyzer cannot be found, installed or started here; the message says which and why."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """The binary and the folder of libraries it needs on ``LD_LIBRARY_PATH`` (None: it finds them itself)."""

    binary: Path
    library_path: Path | None = None

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.library_path is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(self.library_path), env.get("LD_LIBRARY_PATH")]))
        return env

    def check(self) -> "PerfAnalyzer":
        """Start it once (``--help``); a missing library or a wrong binary is :class:`PerfAnalyzerUnavailable`."""
        try:
            done = subprocess.run([str(self.binary), "--help"], env=self.environment(), capture_output=True,
                                  text=True, timeout=60)
        except OSError as exc:
            raise PerfAnalyzerUnavailable(f"{self.binary} does not start: {exc}") from None
        text = done.stdout + done.stderr
        if "--concurrency-range" not in text:
            first = next((line for line in text.splitlines() if line.strip()), f"exit code {done.returncode}")
            raise PerfAnalyzerUnavailable(f"{self.binary} does not run here: {first.strip()}")
        return self


def _link_libraries(into: Path) -> Path:
    """Links under the plain names in ``into`` to nvidia-pytriton's bundled libb64 and CUDA runtime."""
    from rfad.serving.start_errors import TritonNotInstalledError
    from rfad.serving.triton_install import TritonInstall

    try:
        libs = TritonInstall.locate().libs
    except TritonNotInstalledError as exc:
        raise PerfAnalyzerUnavailable(f"perf_analyzer needs nvidia-pytriton's libraries: {exc}") from None
    if libs is None:
        raise PerfAnalyzerUnavailable("perf_analyzer needs nvidia-pytriton's bundled libraries (nvidia_pytriton.libs), "
                                      "which this install does not have")
    into.mkdir(parents=True, exist_ok=True)
    for name, pattern in LIBRARIES.items():
        found = sorted(libs.glob(pattern))
        if not found:
            raise PerfAnalyzerUnavailable(f"perf_analyzer needs {name}: no {pattern} in {libs}")
        link = into / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(found[0])
    return into


def install(folder: Path = TOOL_DIR, echo=print) -> PerfAnalyzer:
    """Download the tritonclient 2.51.0 wheel with pip, unpack its perf_analyzer into ``folder/bin``,
    link its libraries into ``folder/lib``."""
    wheels = folder / "wheel"
    echo(f"installing perf_analyzer from the tritonclient {WHEEL_VERSION} wheel into {folder}")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           f"tritonclient=={WHEEL_VERSION}", "-d", str(wheels)], capture_output=True, text=True)
    wheel = next(iter(sorted(wheels.glob(f"tritonclient-{WHEEL_VERSION}-*.whl"))), None)
    if done.returncode != 0 or wheel is None:
        reason = (done.stderr.strip().splitlines() or ["no wheel for this platform"])[-1]
        raise PerfAnalyzerUnavailable(f"pip could not download tritonclient=={WHEEL_VERSION}: {reason}")
    binary = folder / "bin" / "perf_analyzer"
    binary.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        if WHEEL_BINARY not in archive.namelist():
            raise PerfAnalyzerUnavailable(f"{wheel.name} carries no {WHEEL_BINARY}")
        with archive.open(WHEEL_BINARY) as source, open(binary, "wb") as target:
            shutil.copyfileobj(source, target)
    binary.chmod(0o755)
    return PerfAnalyzer(binary, _link_libraries(folder / "lib")).check()


def locate(echo=print) -> PerfAnalyzer:
    """A working perf_analyzer (module docstring: where it is looked for, and installed)."""
    explicit = os.environ.get("PERF_ANALYZER")
    if explicit:
        return PerfAnalyzer(Path(explicit)).check()
    on_path = shutil.which("perf_analyzer")
    if on_path:
        return PerfAnalyzer(Path(on_path)).check()
    cached = TOOL_DIR / "bin" / "perf_analyzer"
    if cached.is_file():
        return PerfAnalyzer(cached, _link_libraries(TOOL_DIR / "lib")).check()
    return install(TOOL_DIR, echo)


# --- Its report ----------------------------------------------------------------------------------

_CLIENT = {"throughput_infer_per_s": r"Throughput: ([\d.]+) infer/sec", "p50_us": r"p50 latency: (\d+) usec",
           "p90_us": r"p90 latency: (\d+) usec", "p95_us": r"p95 latency: (\d+) usec",
           "p99_us": r"p99 latency: (\d+) usec", "avg_us": r"Avg (?:gRPC|HTTP) time: (\d+) usec"}
_COUNTS = {"inference_count": r"Inference count: (\d+)", "execution_count": r"Execution count: (\d+)",
           "success_count": r"Successful request count: (\d+)"}
_LATENCY = re.compile(r"Avg request latency: (\d+) usec \(([^)]*)\)")
_PART = re.compile(r"([a-z][a-z ]*?) (\d+) usec")
_COMPOSING = re.compile(r"^\s*(\S+), version: (\S*)\s*$")


def _server_block(lines: list[str]) -> dict:
    """Counts and the request latency breakdown of one model's server block (times in usec)."""
    text = "\n".join(lines)
    block = {key: int(m.group(1)) for key, pattern in _COUNTS.items() if (m := re.search(pattern, text))}
    latency = _LATENCY.search(text)
    if latency:
        block["request_us"] = int(latency.group(1))
        for name, value in _PART.findall(latency.group(2)):
            block[name.strip().replace(" ", "_") + "_us"] = int(value)
    return block


def parse_report(text: str) -> dict:
    """perf_analyzer's stdout for ONE concurrency level -> client figures and the server blocks.

    Returns ``{"client": {throughput_infer_per_s, p50_us, ..., avg_us}, "server": {model: block}}``
    where each block holds the counts and ``request_us`` split into ``overhead_us``, ``queue_us``,
    ``compute_input_us``, ``compute_infer_us``, ``compute_output_us`` (as perf_analyzer prints them:
    averages per request over the measurement window); the measured model is under ``""``.
    """
    last = text.rfind("Request concurrency:")
    if last < 0:
        raise ValueError("perf_analyzer report: no 'Request concurrency:' section")
    section = text[last:].split("Inferences/Second vs. Client")[0]
    client = {key: float(m.group(1)) for key, pattern in _CLIENT.items() if (m := re.search(pattern, section))}
    server: dict[str, dict] = {}
    lines = section.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Server:"), None)
    if start is not None:
        current, collected = "", []
        for line in lines[start + 1:]:
            composing = _COMPOSING.match(line)
            if composing:
                server[current] = _server_block(collected)
                current, collected = composing.group(1), []
            elif line.strip() != "Composing models:":
                collected.append(line)
        server[current] = _server_block(collected)
    return {"client": client, "server": server}
