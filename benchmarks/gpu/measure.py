"""Time and peak memory of one part of the GPU check, measured the same way on a GPU and on the CPU.

- Time: on a GPU, CUDA events recorded around each timed call (after warm-up calls; the end event
  is waited for, so the time covers the GPU work the call queued, not only its launch); on the CPU,
  wall time (``time.perf_counter``).
- Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` (the caching allocator's peak of live
  tensors; ``max_memory_reserved``, what the process held from the driver, beside it) since the
  part reset it; on the CPU, the process's peak resident set (``VmHWM``), reset through
  ``/proc/self/clear_refs`` (Linux) at the same point.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field} (the CPU peak memory needs Linux)")


@dataclass
class Meter:
    """Times calls and reads peak memory on ``device`` (cuda or cpu)."""

    device: torch.device

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def clock(self) -> str:
        return "CUDA events" if self.on_gpu else "wall time"

    @property
    def memory_kind(self) -> str:
        return "torch.cuda.max_memory_allocated" if self.on_gpu else "peak resident set (VmHWM)"

    def synchronize(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        """Start a new peak-memory window (on the CPU: VmHWM := VmRSS)."""
        self.synchronize()
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> dict:
        """Peak bytes since :meth:`reset_peak`: ``peak_bytes`` (allocated on a GPU, resident on the
        CPU) and, on a GPU, ``peak_reserved_bytes``."""
        self.synchronize()
        if self.on_gpu:
            return {"peak_bytes": torch.cuda.max_memory_allocated(self.device),
                    "peak_reserved_bytes": torch.cuda.max_memory_reserved(self.device)}
        return {"peak_bytes": _status_bytes("VmHWM")}

    def allocated(self) -> int:
        """Bytes held now: live tensors on a GPU, the resident set on the CPU."""
        self.synchronize()
        return torch.cuda.memory_allocated(self.device) if self.on_gpu else _status_bytes("VmRSS")

    def seconds(self, call: Callable[[], object]) -> float:
        """Time of one call of ``call``."""
        if self.on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    def times(self, call: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
        """``warmup`` calls, then ``repeats`` timed ones: median, min, max and each time, seconds; the
        warm-up calls' wall times too (``warmup_s``: first-call costs such as compilation show there)."""
        warmups = []
        for _ in range(warmup):
            started = time.perf_counter()
            call()
            self.synchronize()
            warmups.append(time.perf_counter() - started)
        times = [self.seconds(call) for _ in range(repeats)]
        return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "times_s": times,
                "repeats": repeats, "warmup_s": warmups}
