"""Which SD-1.5 deployment fits on which device: an ESTIMATE from the twin's measured graphs.

Inputs, all from benchmarks/results/sd15_shape.json: the fp16 graphs' file sizes (the weights a
GPU holds), and the activation peaks per component and batch measured on CPU in onnxruntime with
the fp32 graphs (measured at batch 1, 2 and 4; larger batches from a least-squares line through
those, marked as such). The deployments are the GPU profiles of :mod:`rfad.deploy.profiles`
(``edge``, ``datacenter``), ControlNet+UNet merged or separate. Assumptions, stated with the table:

- a GPU runs the fp16 graphs; their activations are half the fp32 ones measured on CPU (GPU
  runtimes fuse attention, so this is more likely high than low);
- every model instance of the profile holds its own weights and its own activations at the
  profile's ``max_batch_size`` for it (a TensorRT execution context reserves the memory of its
  largest profile shape; the dynamic batcher fills batches up to that size), so they add up;
- :data:`RUNTIME_OVERHEAD` for the CUDA context, runtime workspaces and the Python processes;
- a Jetson Orin shares its memory with the CPU and the OS: :data:`JETSON_USABLE` of it is usable.
"""

from __future__ import annotations

from rfad.deploy.memory import SERVED
from rfad.deploy.profiles import PROFILES

GB = 1e9
DEVICES = {  # name -> (memory in GB as sold, kind)
    "Jetson Orin 16 GB": (16, "jetson"), "Jetson Orin 32 GB": (32, "jetson"), "Jetson Orin 64 GB": (64, "jetson"),
    "L4 24 GB": (24, "gpu"), "A100 40 GB": (40, "gpu"), "A100 80 GB": (80, "gpu"), "H100 80 GB": (80, "gpu"),
}
JETSON_USABLE = 0.75
RUNTIME_OVERHEAD = 1.5 * GB
FP16_ACTIVATION_FACTOR = 0.5
PLANNED_PROFILES = ("edge", "datacenter")


def activation_at(fits: dict, component: str, batch: int) -> float:
    """Bytes of fp32 activations of ``component`` at ``batch``: measured where there is a row,
    else from its fitted line (``fits[component] = (intercept, slope, {batch: measured})``)."""
    intercept, slope, measured = fits[component]
    return measured.get(batch, intercept + slope * batch)


def plan_rows(weights_fp16: dict[str, int], fits: dict, unet_mode: str = "merged") -> list[dict]:
    """One row per GPU profile: GB of weights, activations and total, and per device whether it fits."""
    rows = []
    for name in PLANNED_PROFILES:
        profile = PROFILES[name]
        components = [c for c in SERVED[unet_mode] if c in weights_fp16 and c in fits]
        servings = {c: profile.component(c) for c in components}
        weights = sum(weights_fp16[c] * servings[c].count for c in components)
        activations = sum(FP16_ACTIVATION_FACTOR * activation_at(fits, c, servings[c].max_batch_size)
                          * servings[c].count for c in components)
        total = weights + activations + RUNTIME_OVERHEAD
        row = {"deployment": name, "unet": unet_mode,
               "batch": max(s.max_batch_size for s in servings.values()),
               "instances": sum(s.count for s in servings.values()),
               "weights_gb": weights / GB, "activations_gb": activations / GB, "total_gb": total / GB}
        for device, (memory, kind) in DEVICES.items():
            usable = memory * GB * (JETSON_USABLE if kind == "jetson" else 1.0)
            row[device] = "fits" if total <= usable else "no"
        rows.append(row)
    return rows


def fit_line(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of bytes against batch."""
    import numpy as np

    batches = np.array(sorted(points), dtype=float)
    values = np.array([points[b] for b in sorted(points)], dtype=float)
    slope, intercept = np.polyfit(batches, values, 1)
    return float(intercept), float(slope)
