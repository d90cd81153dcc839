"""How close an exported graph must stay to PyTorch, per graph precision (torch-free).

Two checks read these: the parity check every ``rfad-export onnx`` runs
(:func:`rfad.export.parity.compare_with_references`) and ``rfad-export check``
(:func:`rfad.export.check.check_component`). They live apart from both so that the command's
``--help`` and the docs (docs/render.py) state them without importing torch.
"""

from __future__ import annotations

# Export parity: max abs difference allowed per output, relative to max(1, max |PyTorch output|).
# fp32: the tiny zoo's graphs differ by at most 6e-6. fp16: float16 carries about 3 significant
# digits and the UNet/VAE stack many layers; the tiny zoo's fp16 graphs differ by at most 4.3e-3.
PARITY_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}

# fp16 parity also allows this many times the distance of PyTorch's own float16 run from its
# float32 run, on the same cases (rfad.export.parity.tolerance_of). At SD-1.5 depth float16
# alone misses the fixed 1e-2: on the random-weight twin PyTorch's float16 ControlNet, UNet and
# merged graph differ by up to 1.49x, 1.57x and 1.63x it (U2-Net's saturated random-weight map
# 8.1x), and the converted graphs in onnxruntime by 0.27-1.49x PyTorch's own float16 distance,
# per output (every component, both cases; benchmarks/results/sd15_shape.json, 2026-12-02).
# A conversion error is far beyond either: a kernel 10 % off fails (tests/test_export.py).
FP16_REFERENCE_MARGIN = 2.0

# rfad-export check's elementwise test |a - b| <= atol + rtol * |b|, default per graph precision.
CHECK_TOLERANCES = {"fp32": {"atol": 1e-4, "rtol": 1e-3}, "fp16": {"atol": 2e-2, "rtol": 2e-2}}


def check_tolerance_help(name: str) -> str:
    """``--atol``/``--rtol`` help: the default per precision, from :data:`CHECK_TOLERANCES`."""
    what = {"atol": "Absolute", "rtol": "Relative"}[name]
    return (f"{what} tolerance [default: {CHECK_TOLERANCES['fp32'][name]:g}; "
            f"{CHECK_TOLERANCES['fp16'][name]:g} for an fp16 export].")
