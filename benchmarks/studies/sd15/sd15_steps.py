"""Measurements the SD-1.5 shape benchmark takes one per fresh process (rfad.isolated), so
each one's memory is its own: a component's step in PyTorch eager or in onnxruntime, and what
one onnxruntime run of a graph adds over the loaded session (its activations), at a batch.

All at ``size`` x ``size`` px with inputs from :func:`rfad.components.samples.sample_inputs`.
Memory is the process's resident set: ``VmRSS``, and ``VmHWM`` (its peak) after resetting the
peak through ``/proc/self/clear_refs`` so that loading's own peak does not hide the run's (Linux).
"""

from __future__ import annotations

import time
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def torch_step(models: str, name: str, facts: dict, batch: int, size: int, repeats: int) -> dict:
    """Fastest of ``repeats`` calls of component ``name``'s PyTorch module (after one warm-up)."""
    import torch

    from rfad.components.registry import COMPONENTS, component_specs
    from rfad.components.samples import sample_inputs
    from rfad.components.specs import ModelFacts
    from rfad.export.api import component_graphs, load_models, quiet_export_logs
    from rfad.models.model_set import ModelSet

    quiet_export_logs()
    spec = component_specs(ModelFacts.from_dict(facts))[name]
    diffusion, judge = load_models(ModelSet.resolve(models), (COMPONENTS[name].group,))
    graph = component_graphs(diffusion, judge)[name]
    inputs = [torch.from_numpy(v) for v in sample_inputs(spec, batch, size, size).values()]
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            graph(*inputs)
            if i:
                times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_rss_bytes": _status("VmHWM")}


def onnxruntime_step(graph_path: str, spec: dict, precision: str, batch: int, size: int, repeats: int) -> dict:
    """The graph in onnxruntime: session load time and resident memory, then ``repeats`` runs
    after one (``repeats`` 0: the one run); the fastest run's seconds and the memory the first run
    added over the loaded session (``activation_bytes``)."""
    from rfad.components.samples import sample_inputs
    from rfad.components.specs import ComponentSpec
    from rfad.onnx_session import open_session

    spec = ComponentSpec.from_dict(spec)
    feed = sample_inputs(spec, batch, size, size)
    before = _status("VmRSS")
    start = time.perf_counter()
    session = open_session(Path(graph_path), precision)
    load_s, loaded = time.perf_counter() - start, _status("VmRSS")
    load_peak = _status("VmHWM")
    _reset_peak()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
        if i == 0:
            activation = _status("VmHWM") - loaded
    return {"seconds": min(times[1:] or times), "load_s": load_s, "session_bytes": loaded - before,
            "load_peak_bytes": load_peak, "activation_bytes": max(0, activation), "peak_rss_bytes": _status("VmHWM")}
