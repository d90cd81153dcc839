"""Opening exported graphs in ONNX Runtime: one place for the session options every caller needs.

The onnxruntime runner, the export parity check, ``rfad-export check``, the Triton python
component model and the benchmarks all open graphs through :func:`open_session`, so a
workaround for one runtime quirk is made once.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def open_session(path: str | Path, precision: str = "fp32", providers: list | None = None,
                 threads: "ThreadSettings | None" = None):
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` (CPU provider unless told
    otherwise; ``threads``: onnxruntime's own defaults unless given)."""
    import onnxruntime

    providers = providers or ["CPUExecutionProvider"]
    options = session_options(precision if "CPUExecutionProvider" in providers[:1] else "fp32")
    if threads is not None:
        threads.apply(options)
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


@dataclass(frozen=True)
class ThreadSettings:
    """onnxruntime's CPU threads for one session.

    ``intra_op``: threads one operator may use (0: onnxruntime's default, one per physical core);
    ``spinning``: whether idle intra-op workers spin-wait for the next operator instead of
    sleeping (onnxruntime's default: yes, which pays only when nothing else needs the cores).
    Operators run one at a time (sequential execution: no inter-op pool).
    """

    intra_op: int = 0
    spinning: bool = True

    def __post_init__(self):
        if isinstance(self.intra_op, bool) or not isinstance(self.intra_op, int) or self.intra_op < 0:
            raise ValueError(f"intra_op_threads: {self.intra_op!r} is not a thread count (0 = one per core)")

    def apply(self, options) -> None:
        options.intra_op_num_threads = self.intra_op
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")

    def to_parameters(self) -> dict[str, str]:
        """As model-config parameters (what rfad-export writes for a python component)."""
        return {"intra_op_threads": str(self.intra_op), "spinning": "yes" if self.spinning else "no"}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> "ThreadSettings":
        """From model-config parameters; a missing one takes the default; a bad one names itself."""
        threads = parameters.get("intra_op_threads", str(cls.intra_op))
        spinning = parameters.get("spinning", "yes" if cls.spinning else "no")
        if not threads.isdigit():
            raise ValueError(f"intra_op_threads: {threads!r} is not a thread count (0 = one per core)")
        if spinning not in ("yes", "no"):
            raise ValueError(f"spinning: {spinning!r} is not yes or no")
        return cls(int(threads), spinning == "yes")


# The threads of the python component models (triton_repo/onnx_component), written into their
# configs by rfad-export triton-repo. Several component stubs and pipeline instances share the
# cores: idle workers that spin-wait take them from the stub that runs next, so they sleep; and
# one thread per stub, as requests in flight already keep the cores busy. Measured 2026-12-01 on
# 2 cores (another job busy on them), small shape, default judge route, 4 rfad_pipeline
# instances, one served attempt (median of 3) and images/s to 4 clients: onnxruntime's defaults
# (a thread per core, spinning) 12.5 s, 0.096/s; spinning off 8.0 s, 0.160/s; one thread,
# spinning off 6.9 s, 0.188/s.
COMPONENT_THREADS = ThreadSettings(intra_op=1, spinning=False)
