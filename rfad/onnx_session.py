"""Opening exported graphs in ONNX Runtime: one place for the session options every caller needs.

The onnxruntime runner, the export parity check, ``rfad-export check``, the Triton python
component model and the benchmarks all open graphs through :func:`open_session`, so a
workaround for one runtime quirk is made once. Callers that serve a component name it, and get
its memory options (:data:`MEMORY_OPTIONS`, :func:`memory_options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("fp32", "fp16")


def session_options(precision: str):
    """SessionOptions for a graph of ``precision`` (``fp32`` or ``fp16``: the export manifest says which).

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


@dataclass(frozen=True)
class MemoryOptions:
    """How a component's session manages its CPU memory.

    ``arena``: onnxruntime's CPU memory arena (``enable_cpu_mem_arena``); ``memory_pattern``:
    plan each input shape's allocations once and take them as one block per run
    (``enable_mem_pattern``); ``exact_arena``: the arena grows by what is asked
    (``kSameAsRequested``) rather than to the next power of two.
    """

    arena: bool = True
    memory_pattern: bool = True
    exact_arena: bool = False


# Per component, chosen by what benchmarks/suite/session_memory_bench.py measures (a warm-up at
# the largest batch, then runs of batches drawn as the dynamic batcher hands them out, RSS after
# both; the numbers: docs/performance.md, "onnxruntime sessions: memory options").
#
# Memory patterns are OFF for every batched component. onnxruntime caches one pattern per input
# shape and takes it from the arena as ONE block per run; with up to 16 batch sizes the blocks
# of different sizes fragment the arena, which extends (by powers of two) to fit the next one
# and never gives memory back: with patterns (onnxruntime's defaults) the VAE and saliency
# sessions grow over the runs, without them they stay flat. Per-tensor allocation from the arena
# costs the diffusion and text graphs little latency beside the defaults.
#
# The arena stays ON: without it every tensor is a malloc/free and glibc keeps the freed heap
# (the VAE sessions grow several times over without an arena).
#
# The arena grows by exactly what is asked (kSameAsRequested) for saliency: U2-Net works at
# 320 px whatever the input, so its activations are the largest of the judge and a power-of-two
# extension can reserve almost twice them; without patterns it still creeps, with exact
# extension it stays flat. That costs saliency some latency beside the defaults: the price of a
# flat judge. The others' activations are small enough that the default extension settles at once.
_NO_PATTERN = MemoryOptions(memory_pattern=False)
MEMORY_OPTIONS: dict[str, MemoryOptions] = {
    "text_encoder": _NO_PATTERN,
    "controlnet": _NO_PATTERN,
    "unet": _NO_PATTERN,
    "controlnet_unet": _NO_PATTERN,
    "vae_encoder": _NO_PATTERN,
    "vae_decoder": _NO_PATTERN,
    "depth": _NO_PATTERN,
    "saliency": MemoryOptions(memory_pattern=False, exact_arena=True),
    "rfnet_text": _NO_PATTERN,
    "rfnet": _NO_PATTERN,
    "screen_rfnet_text": _NO_PATTERN,  # the screening RFNet's graphs are RFNet's
    "screen_rfnet": _NO_PATTERN,
}

_exact_arena_registered = False


def _use_exact_arena(options) -> None:
    """Let the session allocate from the process's shared CPU arena that grows by what is asked.

    onnxruntime sets a CPU arena's extension strategy only on an allocator registered with its
    environment (once per process), which sessions then opt into; a Triton stub runs one session,
    so the arena is that component's.
    """
    import onnxruntime

    global _exact_arena_registered
    if not _exact_arena_registered:
        info = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                         onnxruntime.OrtMemType.DEFAULT)
        # max_mem 0 (no cap), extend strategy 1 = kSameAsRequested, defaults for the chunk sizes.
        onnxruntime.create_and_register_allocator(info, onnxruntime.OrtArenaCfg(0, 1, -1, -1))
        _exact_arena_registered = True
    options.add_session_config_entry("session.use_env_allocators", "1")


def apply_memory_options(options, memory: MemoryOptions):
    """Set ``memory`` on ``options`` (a SessionOptions); returns it."""
    options.enable_cpu_mem_arena = memory.arena
    options.enable_mem_pattern = memory.memory_pattern
    if memory.exact_arena:
        _use_exact_arena(options)
    return options


def memory_options(options, component: str):
    """Apply ``component``'s :data:`MEMORY_OPTIONS` to ``options`` (a SessionOptions); returns it."""
    if component not in MEMORY_OPTIONS:
        raise ValueError(f"component: {component!r} has no memory options (known: {', '.join(MEMORY_OPTIONS)})")
    return apply_memory_options(options, MEMORY_OPTIONS[component])


def open_session(path: str | Path, precision: str, providers: list | None = None,
                 component: str | None = None, threads: "ThreadSettings | None" = None):
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` (CPU provider unless told otherwise);
    with ``component``, that component's memory options on the CPU provider; with ``threads``, those
    CPU threads (onnxruntime's own defaults for what is not given)."""
    import onnxruntime

    providers = providers or ["CPUExecutionProvider"]
    on_cpu = "CPUExecutionProvider" in providers[:1]
    options = session_options(precision if on_cpu else "fp32")
    if component is not None and on_cpu:
        memory_options(options, component)
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
# configs by rfad-export triton-repo: a thread per core, and idle workers sleep instead of
# spin-waiting, because several component stubs and pipeline instances share the cores and a
# spinning worker takes a core from the stub that runs next. Measured by pipeline_bench.py on
# 2 idle cores, 2026-12-02, two runs back to back (4 rfad_pipeline instances; served attempt /
# in-process attempt, and images/s to 4 clients served vs in process):
#   one thread per component, no spinning: tiny 0.80, 3.25 vs 2.36/s; small 1.44, 0.229 vs 0.286/s
#   a thread per core, no spinning:        tiny 0.79, 3.59 vs 2.14/s; small 0.94, 0.308 vs 0.264/s
# One thread left the denoiser, which dominates an attempt, one core of the two. (An earlier
# measurement on a machine another job was loading had favoured one thread; onnxruntime's
# defaults, spinning, were the slowest there: 12.5 s per small attempt against 8.0 s without.)
COMPONENT_THREADS = ThreadSettings(intra_op=0, spinning=False)
