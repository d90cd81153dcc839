"""Which SD-1.5 deployment fits on which device: an ESTIMATE from the twin's measured graphs.

Inputs, all from benchmarks/results/sd15_shape.json: the fp16 graphs' file sizes (the weights a
GPU holds), and the activation peaks per component and batch measured on CPU in onnxruntime with
the fp32 graphs (measured at batch 1, 2 and 4; batch 8 and 16 from a least-squares line through
those, marked as such). Assumptions, stated with the table:

- a GPU runs the fp16 graphs; their activations are half the fp32 ones measured on CPU (GPU
  runtimes fuse attention, so this is more likely high than low);
- the pipeline runs one component at a time per request, so a pipeline instance needs the largest
  activation of its components at its batches (diffusion at 2K under guidance, the VAE decoder
  and the judge at K candidates), and instances add up;
- :data:`RUNTIME_OVERHEAD` for the CUDA context, runtime workspaces and the Python processes;
- a Jetson Orin shares its memory with the CPU and the OS: :data:`JETSON_USABLE` of it is usable.
"""

from __future__ import annotations

GB = 1e9
DEVICES = {  # name -> (memory in GB as sold, kind)
    "Jetson Orin 16 GB": (16, "jetson"), "Jetson Orin 32 GB": (32, "jetson"), "Jetson Orin 64 GB": (64, "jetson"),
    "L4 24 GB": (24, "gpu"), "A100 40 GB": (40, "gpu"), "A100 80 GB": (80, "gpu"), "H100 80 GB": (80, "gpu"),
}
JETSON_USABLE = 0.75
RUNTIME_OVERHEAD = 1.5 * GB
FP16_ACTIVATION_FACTOR = 0.5
SERVED = {"merged": ("text_encoder", "controlnet_unet", "vae_encoder", "vae_decoder"),
          "separate": ("text_encoder", "controlnet", "unet", "vae_encoder", "vae_decoder")}
JUDGE = ("depth", "saliency", "rfnet_text", "rfnet")
# Deployments: (candidates K per attempt, pipeline instances), as the edge and datacenter profiles run them.
DEPLOYMENTS = {"edge: K=1, 1 instance": (1, 1), "datacenter: K=8, 1 instance": (8, 1),
               "datacenter: K=8, 2 instances": (8, 2)}


def batch_of(component: str, candidates: int) -> int:
    """The batch the loop sends ``component`` with ``candidates`` per attempt under guidance."""
    if component in ("text_encoder", "controlnet", "unet", "controlnet_unet"):
        return 2 * candidates if component != "text_encoder" else 2
    return 1 if component == "rfnet_text" else candidates


def activation_at(fits: dict, component: str, batch: int) -> float:
    """Bytes of fp32 activations of ``component`` at ``batch``: measured where there is a row,
    else from its fitted line (``fits[component] = (intercept, slope, {batch: measured})``)."""
    intercept, slope, measured = fits[component]
    return measured.get(batch, intercept + slope * batch)


def plan_rows(weights_fp16: dict[str, int], fits: dict, unet_mode: str = "merged") -> list[dict]:
    """One row per deployment: its GB of weights, activations and total, and per device whether it fits."""
    components = SERVED[unet_mode] + JUDGE
    weights = sum(weights_fp16[c] for c in components)
    rows = []
    for deployment, (candidates, instances) in DEPLOYMENTS.items():
        largest = max(activation_at(fits, c, batch_of(c, candidates)) for c in components)
        activations = instances * FP16_ACTIVATION_FACTOR * largest
        total = weights + activations + RUNTIME_OVERHEAD
        row = {"deployment": deployment, "unet": unet_mode, "weights_gb": weights / GB,
               "activations_gb": activations / GB, "total_gb": total / GB}
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
