"""How much memory ``rfad-export onnx`` needs, said before it starts.

Each component is traced and finished in processes of their own (:mod:`rfad.isolated`),
one at a time, so the export needs its largest step plus the processes that stay up. Measured
on the SD-1.5 twin (docs/export.md, "Memory at SD-1.5 sizes"), a step's peak resident memory is
its component's fp32 weight bytes times a factor plus :data:`STEP_OVERHEAD` (the imported
libraries and the trace's activations at the small check size). The factor depends on how the
graph is written: over the external-data threshold the weights are streamed and the factor is
:data:`STEP_FACTOR` (UNet 1.07, merged ControlNet+UNet 1.09 measured); under it the graph is one
protobuf message that the exporter, onnx and onnxruntime each hold whole, and the factor is
:data:`INLINE_STEP_FACTOR` (ControlNet 4.6, DPT-Large 4.7 measured). The exporting process and
the forkserver take :data:`RESIDENT_PROCESSES` together.
"""

from __future__ import annotations

from pathlib import Path

from rfad.export.onnx_export import PROTOBUF_LIMIT

GIB = 1024**3
STEP_FACTOR = 1.1
INLINE_STEP_FACTOR = 4.8
STEP_OVERHEAD = int(1.5 * GIB)  # U2-Net: 176 MB of weights, a 1.97 GiB trace step (its activations)
RESIDENT_PROCESSES = int(1.0 * GIB)


def step_factor(weight_bytes: int, external_data_threshold: int = PROTOBUF_LIMIT) -> float:
    """Peak memory per byte of fp32 weights of a step, by whether its graph streams its weights."""
    return STEP_FACTOR if weight_bytes > external_data_threshold else INLINE_STEP_FACTOR


def step_peak_estimate(weight_bytes: int, external_data_threshold: int = PROTOBUF_LIMIT) -> int:
    """Peak resident bytes of the largest step of a component whose fp32 weights are ``weight_bytes``."""
    return int(step_factor(weight_bytes, external_data_threshold) * weight_bytes) + STEP_OVERHEAD


def export_peak_estimate(weight_bytes: dict[str, int], external_data_threshold: int = PROTOBUF_LIMIT) -> int:
    """Peak resident bytes of the whole export (all processes) of components with these fp32 weights."""
    return RESIDENT_PROCESSES + max(step_peak_estimate(b, external_data_threshold) for b in weight_bytes.values())


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


def memory_shortfall(weight_bytes: dict[str, int], available: int,
                     external_data_threshold: int = PROTOBUF_LIMIT) -> str | None:
    """A one-line reason why an export of components with these weights would not fit in
    ``available`` bytes (None when it fits). An unknown ``available`` is the caller's to refuse."""
    if not weight_bytes:
        return None
    needed = export_peak_estimate(weight_bytes, external_data_threshold)
    if needed <= available:
        return None
    largest = max(weight_bytes, key=lambda name: step_peak_estimate(weight_bytes[name], external_data_threshold))
    factor = step_factor(weight_bytes[largest], external_data_threshold)
    return (f"needs about {needed / GIB:.1f} GiB of memory and {available / GIB:.1f} GiB is available "
            f"(MemAvailable): its largest step is {largest}'s, which has {weight_bytes[largest] / GIB:.2f} GiB of "
            f"fp32 weights; its step needs {factor} x that + {STEP_OVERHEAD / GIB:.1f} GiB, plus "
            f"{RESIDENT_PROCESSES / GIB:.1f} GiB for the export's own processes. Free memory, or export fewer "
            "components at a time (--components)")
