"""Run one step in a fresh process, so that everything it allocated goes back to the OS.

A process that has held a model keeps much of its memory after the model is freed (the
allocator's arenas, torch's caches), so exporting every component in one process needs the sum
of what the steps leave behind; the SD-1.5 export was killed at 22.7 GiB that way. Here each
step (e.g. trace one component in PyTorch, or finish and check its graph) runs in a new process
that ends with the step, so a job needs only its largest step, and each step's peak resident
memory is its own (the export and the memory benchmarks use that).

New processes are forked from a multiprocessing *forkserver* that has imported the block's
``preload`` modules once (for the export: torch, diffusers, onnx; seconds), so a step starts in
milliseconds and never inherits the caller's threads or models. Each step reports its own peak
resident memory.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Sequence

# Imported by the forkserver before it forks any step: what every step of the current
# step_processes block needs (empty outside a block: each step imports what it uses).
_preload: list[str] = []


class StepFailed(RuntimeError):
    """The step's process ended without a result (killed, e.g. by the kernel's OOM killer)."""


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_preload)
    return context


def _measured(function: Callable, args: tuple) -> tuple[object, dict]:
    start = time.perf_counter()
    result = function(*args)
    usage = {"seconds": time.perf_counter() - start, "pid": os.getpid(),
             "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    return result, usage


def run_isolated(function: Callable, *args, what: str = "step") -> tuple[object, dict]:
    """``(function(*args), usage)`` computed in a fresh process; ``usage`` holds the step's wall
    ``seconds``, its process's ``pid`` and ``peak_rss_bytes``. ``function`` and ``args`` must be picklable
    (a module-level function, paths, dicts). An exception in the step is re-raised here; a
    process that dies is a :class:`StepFailed` naming ``what``.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
        try:
            return pool.submit(_measured, function, args).result()
        except BrokenProcessPool:
            raise StepFailed(f"{what}: its process ended without a result (killed by the system, e.g. out of "
                             "memory)") from None


@contextmanager
def step_processes(preload: Sequence[str] = ()):
    """A block whose :func:`run_isolated` steps share one forkserver, stopped and reaped at the end.

    ``preload``: modules the forkserver imports once, before it forks the block's first step.
    Reaping it accounts the steps' resource use to this process (``getrusage(RUSAGE_CHILDREN)``,
    hence ``/usr/bin/time``'s maximum resident set size), and no server outlives the block.
    multiprocessing has no public call for this; ``_stop`` is the one its own tests use.
    """
    global _preload
    previous, _preload = _preload, list(preload)
    try:
        yield
    finally:
        _preload = previous
        server = getattr(multiprocessing.forkserver, "_forkserver", None)
        if server is not None and hasattr(server, "_stop"):
            server._stop()
