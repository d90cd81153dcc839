"""How much memory ``rfad-export onnx`` needs, said before it starts.

Each component is traced and finished in processes of their own (:mod:`rfad.export.isolated`),
one at a time, so the export needs its largest step plus the processes that stay up. Measured
on the SD-1.5 twin (docs/export.md, "Memory at SD-1.5 sizes"), a step's peak resident memory is its component's fp32
weight bytes times :data:`STEP_FACTOR` plus :data:`STEP_OVERHEAD` (the imported libraries and
the trace's activations at the small check size), and the exporting process and the
forkserver take :data:`RESIDENT_PROCESSES` together.
"""

from __future__ import annotations

from pathlib import Path

GIB = 1024**3
STEP_FACTOR = 1.1
STEP_OVERHEAD = int(0.9 * GIB)
RESIDENT_PROCESSES = int(1.0 * GIB)


def step_peak_estimate(weight_bytes: int) -> int:
    """Peak resident bytes of the largest step of a component whose fp32 weights are ``weight_bytes``."""
    return int(STEP_FACTOR * weight_bytes) + STEP_OVERHEAD


def export_peak_estimate(weight_bytes: dict[str, int]) -> int:
    """Peak resident bytes of the whole export (all processes) of components with these fp32 weights."""
    return RESIDENT_PROCESSES + max(step_peak_estimate(b) for b in weight_bytes.values())


def memory_available(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """``MemAvailable`` in bytes (what can be allocated without swapping), or None where the
    kernel does not say (not Linux)."""
    try:
        lines = Path(meminfo).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def memory_shortfall(weight_bytes: dict[str, int], available: int | None) -> str | None:
    """A one-line reason why an export of components with these weights would not fit in
    ``available`` bytes (None when it fits, or when the memory available is unknown)."""
    if available is None or not weight_bytes:
        return None
    needed = export_peak_estimate(weight_bytes)
    if needed <= available:
        return None
    largest = max(weight_bytes, key=weight_bytes.get)
    return (f"needs about {needed / GIB:.1f} GiB of memory and {available / GIB:.1f} GiB is available "
            f"(MemAvailable): its largest component, {largest}, has {weight_bytes[largest] / GIB:.2f} GiB of "
            f"fp32 weights; its step needs {STEP_FACTOR} x that + {STEP_OVERHEAD / GIB:.1f} GiB, plus "
            f"{RESIDENT_PROCESSES / GIB:.1f} GiB for the export's own processes. Free memory, or export fewer "
            "components at a time (--components)")
