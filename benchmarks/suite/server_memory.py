"""Resident memory of a Triton server, per process, sampled while a load runs (Linux /proc).

The server is one process tree: ``tritonserver`` and one python-backend stub per model instance.
A stub's command line is ``triton_python_backend_stub <repo>/<model>/<version>/model.py
<shm region> <shm size> <shm growth> <parent pid> <python lib> <ipc handle> <instance name>``, so
each stub is named by its instance (``saliency_0_0``, ``rfad_pipeline_0_3``) from it.

Per process three figures are read from ``/proc/<pid>/status``: ``VmRSS`` (what ``ps`` shows),
its anonymous part ``RssAnon`` (heaps, onnxruntime arenas, Python objects) and ``RssShmem``
(pages of the python backend's shared-memory regions this process touched; the server maps
every stub's region, so shared pages count once per process that touched them, as RSS does).
Per stub also the pages its shared-memory region holds (``/dev/shm/<region>``, allocated
blocks): the python backend grows a region when a tensor does not fit and never shrinks it.

:class:`MemorySampler` samples every ``interval_s`` seconds in a thread, each sample tagged
with the number of requests completed so far; :func:`memory_report` turns the samples into the
per-process table and the slopes (least squares of RSS against requests over the second half
of the run).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

STUB_BINARY = "triton_python_backend_stub"
FIELDS = {"VmRSS:": "rss_kb", "RssAnon:": "anon_kb", "RssShmem:": "shmem_kb"}


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
        children[parent].append(int(entry))
    return children


def _argv(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def process_name(pid: int) -> str | None:
    """``tritonserver``, a stub's instance name, or None for anything else (a bash between them)."""
    argv = _argv(pid)
    if not argv:
        return None
    binary = Path(argv[0]).name
    if binary == STUB_BINARY and len(argv) >= 9:
        return argv[8]
    if binary == STUB_BINARY and len(argv) >= 2:  # an older stub's argument list: name the model folder
        return Path(argv[1]).parents[1].name
    if binary == "tritonserver":
        return "tritonserver"
    return None


def shm_region_kb(pid: int) -> int | None:
    """KB allocated in the shared-memory region of stub ``pid`` (its second argument), or None."""
    argv = _argv(pid)
    if len(argv) < 3 or Path(argv[0]).name != STUB_BINARY:
        return None
    try:
        return os.stat(f"/dev/shm/{argv[2]}").st_blocks // 2
    except OSError:
        return None


def process_memory(pid: int) -> dict[str, int] | None:
    """{"rss_kb", "anon_kb", "shmem_kb"} of ``pid``, or None if it is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key = FIELDS.get(line.split(None, 1)[0] if line.strip() else "")
                if key:
                    values[key] = int(line.split()[1])
    except OSError:
        return None
    return values if len(values) == len(FIELDS) else None


def server_processes(root_pid: int) -> dict[str, int]:
    """Name -> pid of ``tritonserver`` (``root_pid`` or a descendant) and its stubs."""
    children = _children()
    found, stack = {}, [root_pid]
    while stack:
        pid = stack.pop()
        name = process_name(pid)
        if name is not None:
            found[name] = pid
        stack += children.get(pid, [])
    return found


class MemorySampler:
    """Samples every server process every ``interval_s`` s in a thread; ``requests_done()`` tags each sample."""

    def __init__(self, root_pid: int, requests_done: Callable[[], int], interval_s: float = 2.0):
        self.root_pid = root_pid
        self.requests_done = requests_done
        self.interval_s = interval_s
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pids: dict[str, int] = {}

    def sample(self) -> dict:
        if not self._pids or any(process_memory(pid) is None for pid in self._pids.values()):
            self._pids = server_processes(self.root_pid)
        processes = {}
        for name, pid in self._pids.items():
            memory = process_memory(pid)
            if memory is not None:
                region = shm_region_kb(pid)
                processes[name] = memory if region is None else {**memory, "region_kb": region}
        record = {"t": time.monotonic(), "requests": self.requests_done(), "processes": processes}
        self.samples.append(record)
        return record

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def slope_kb_per_request(requests: list[int], values_kb: list[float]) -> float | None:
    """Least-squares slope of ``values_kb`` against ``requests`` over the second half of the run
    (samples at or past half the final request count); None with fewer than 3 such samples."""
    if not requests:
        return None
    half = requests[-1] / 2
    points = [(r, v) for r, v in zip(requests, values_kb) if r >= half]
    xs = np.array([p[0] for p in points], dtype=np.float64)
    if len(points) < 3 or np.ptp(xs) == 0:
        return None
    return float(np.polyfit(xs, np.array([p[1] for p in points], dtype=np.float64), 1)[0])


def memory_report(samples: list[dict]) -> dict:
    """Per-process and total figures of a run's ``samples`` (the first taken after warm-up).

    Per process: RSS at the start, at the end and at most (MiB), anon and shmem at the end, the
    peak as a multiple of the start, and the slope (KB per request) of RSS over the second half.
    ``total``: the same for the sum over processes.
    """
    names = sorted({name for s in samples for name in s["processes"]}, key=lambda n: (n != "tritonserver", n))
    requests = [s["requests"] for s in samples]
    rows = []
    series = {name: [s["processes"].get(name, {}).get("rss_kb") for s in samples] for name in names}
    series["total"] = [sum(p["rss_kb"] for p in s["processes"].values()) for s in samples]
    for name, values in series.items():
        present = [(r, v) for r, v in zip(requests, values) if v is not None]
        if not present:
            continue
        xs, ys = [p[0] for p in present], [p[1] for p in present]
        first = next(s["processes"] for s in samples if name == "total" or name in s["processes"])
        last = samples[-1]["processes"]
        last = {k: sum(p.get(k, 0) for p in last.values()) for k in ("anon_kb", "shmem_kb", "region_kb")} \
            if name == "total" else last.get(name, {})
        first = {k: sum(p.get(k, 0) for p in first.values()) for k in ("region_kb",)} \
            if name == "total" else first.get(name, {})
        rows.append({
            "process": name, "rss_start_mib": ys[0] / 1024, "rss_end_mib": ys[-1] / 1024, "rss_max_mib": max(ys) / 1024,
            "anon_end_mib": last["anon_kb"] / 1024 if "anon_kb" in last else None,
            "shmem_end_mib": last["shmem_kb"] / 1024 if "shmem_kb" in last else None,
            "shm_region_start_mib": first["region_kb"] / 1024 if "region_kb" in first else None,
            "shm_region_end_mib": last["region_kb"] / 1024 if "region_kb" in last else None,
            "peak_over_start": max(ys) / ys[0], "slope_kb_per_request": slope_kb_per_request(xs, ys),
        })
    return {"processes": [r for r in rows if r["process"] != "total"],
            "total": next(r for r in rows if r["process"] == "total"),
            "series": {"requests": requests, "t": [round(s["t"] - samples[0]["t"], 1) for s in samples],
                       **{name: values for name, values in series.items()}}}
