"""Opening exported graphs in ONNX Runtime: one place for the session options every caller needs.

The onnxruntime runner, the export parity check, ``rfad-export check``, the Triton python
component model and the benchmarks all open graphs through :func:`open_session`, so a
workaround for one runtime quirk is made once.
"""

from __future__ import annotations

from pathlib import Path

PRECISIONS = ("fp32", "fp16")


def session_options(precision: str = "fp32"):
    """SessionOptions for a graph of ``precision``.

    fp16 graphs on the CPU provider get ``ORT_ENABLE_EXTENDED`` instead of the default
    ``ORT_ENABLE_ALL``: the layout transformations that only the "all" level adds crash
    onnxruntime (1.32, segmentation fault while creating the session) on the fp16 RFNet
    graph. On GPU providers the default stays.
    """
    import onnxruntime

    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    options = onnxruntime.SessionOptions()
    if precision == "fp16":
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return options


def open_session(path: str | Path, precision: str = "fp32", providers: list[str] | None = None):
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` (CPU provider unless told otherwise)."""
    import onnxruntime

    providers = providers or ["CPUExecutionProvider"]
    options = session_options(precision if "CPUExecutionProvider" in providers[:1] else "fp32")
    return onnxruntime.InferenceSession(str(path), options, providers=providers)
