"""Export parity: PyTorch reference outputs on sample inputs of a spec's shapes
(:mod:`rfad.components.samples`), and their comparison with onnxruntime, in separate steps.

The references are computed where the PyTorch module is (the trace step) and saved as
``reference.npz``: the inputs and outputs of two cases, another batch than the export's 2 and
then a non-square image. The graph is compared with them later, in a process that holds only
the ONNX graph, so the two never need memory at the same time.

An fp16 export is also given PyTorch's own float16 outputs of the same cases
(:func:`half_reference_cases`): how far float16 arithmetic alone moves the model's outputs, so
the check can tell what the conversion adds from what the precision costs
(:func:`tolerance_of`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rfad.components.samples import check_side, pixel_multiple, sample_inputs
from rfad.components.specs import ComponentSpec, ModelFacts
from rfad.export.tolerances import FP16_REFERENCE_MARGIN, PARITY_TOLERANCE


class ParityError(RuntimeError):
    """A graph's output does not have the PyTorch output's shape."""


def torch_outputs(graph, spec: ComponentSpec, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The module's outputs (float32 numpy, in spec order) for the named inputs."""
    import torch

    with torch.no_grad():
        out = graph(*(torch.from_numpy(arrays[name]) for name in spec.input_names))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().numpy() for o in out]


def reference_cases(graph, spec: ComponentSpec, facts: ModelFacts, vocab: int) -> dict[str, np.ndarray]:
    """Inputs and PyTorch outputs of the two parity cases, keyed ``case/in|out/name`` (an npz's layout)."""
    side = check_side(facts)
    shapes = [(3, side, side), (1, side, side + pixel_multiple(facts))]  # batch != 2; then H != W
    cases = {}
    for i, (batch, height, width) in enumerate(shapes):
        arrays = sample_inputs(spec, batch, height, width, seed=i + 1, vocab=vocab)
        cases.update({f"{i}/in/{name}": value for name, value in arrays.items()})
        outputs = torch_outputs(graph, spec, arrays)
        cases.update({f"{i}/out/{name}": value for name, value in zip(spec.output_names, outputs, strict=True)})
    return cases


# The key of ``reference.npz`` that says why it holds no float16 references.
NO_HALF = "half/missing"


def half_reference_cases(graph, spec: ComponentSpec, cases: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The module's outputs in float16 for the inputs of ``cases``, keyed ``case/half/name`` (float32
    numpy; an output that is not finite is kept so). Converts ``graph`` to float16 in place: call
    it last. Where PyTorch has no float16 CPU kernel for one of the module's ops, only
    :data:`NO_HALF`, saying so: that graph's fp16 parity is held to the fixed tolerance, and
    parity.json records why. Any other error is raised."""
    import torch

    graph.half()
    half = {}
    for case in sorted({key.split("/")[0] for key in cases}):
        arrays = {name: cases[f"{case}/in/{name}"] for name in spec.input_names}
        tensors = [torch.from_numpy(a) for a in arrays.values()]
        try:
            with torch.no_grad():
                out = graph(*(t.half() if t.is_floating_point() else t for t in tensors))
        except (RuntimeError, NotImplementedError) as exc:
            if "not implemented for 'Half'" not in str(exc):
                raise
            return {NO_HALF: np.array(f"PyTorch has no float16 CPU kernel: {str(exc).splitlines()[0]}")}
        out = out if isinstance(out, (tuple, list)) else (out,)
        half.update({f"{case}/half/{name}": o.float().numpy() for name, o in zip(spec.output_names, out, strict=True)})
    return half


def tolerance_of(reference: np.ndarray, precision: str, half: np.ndarray | None = None) -> float:
    """The max abs difference an output may have from ``reference`` (PyTorch, float32).

    :data:`PARITY_TOLERANCE` of the precision, relative to max(1, max |reference|). For fp16,
    with PyTorch's own float16 output ``half``, at least :data:`FP16_REFERENCE_MARGIN` times
    that output's distance from the reference: a deep graph loses that much to float16 in any
    runtime, and a conversion error is far larger (a non-finite ``half`` is ignored).
    """
    tolerance = PARITY_TOLERANCE[precision] * max(1.0, float(np.abs(reference).max()))
    if precision == "fp16" and half is not None:
        own = float(np.abs(half - reference).max())
        if np.isfinite(own):
            tolerance = max(tolerance, FP16_REFERENCE_MARGIN * own)
    return tolerance


def compare_with_references(spec: ComponentSpec, graph_path: Path, cases: dict[str, np.ndarray],
                            precision: str) -> list[dict]:
    """Max abs difference per output and case between the graph in onnxruntime and the references
    (fp16 rows also give ``torch_fp16_diff``, PyTorch's own float16 distance, None without it and
    then ``torch_fp16_missing``, why; and ``fixed_tolerance``, what the tolerance would be without it)."""
    from rfad.onnx_session import open_session

    session = open_session(graph_path, precision)
    rows = []
    for case in sorted({key.split("/")[0] for key in cases if "/in/" in key}):
        feed = {name: cases[f"{case}/in/{name}"] for name in spec.input_names}
        results = session.run(spec.output_names, feed)
        for name, got in zip(spec.output_names, results, strict=True):
            ref = cases[f"{case}/out/{name}"]
            if got.shape != ref.shape:
                raise ParityError(f"{spec.name}: output {name} has shape {got.shape} in onnxruntime, {ref.shape} in "
                                  f"PyTorch for inputs {[tuple(v.shape) for v in feed.values()]}")
            diff = float(np.abs(got.astype(np.float32) - ref).max())
            half = cases.get(f"{case}/half/{name}")
            tolerance = tolerance_of(ref, precision, half)
            row = {"component": spec.name, "output": name, "shape": list(ref.shape), "max_abs_diff": diff,
                   "tolerance": tolerance, "ok": diff <= tolerance}
            if precision == "fp16":
                row["torch_fp16_diff"] = None if half is None else float(np.abs(half - ref).max())
                if half is None:
                    row["torch_fp16_missing"] = str(cases.get(NO_HALF, "no float16 reference was computed"))
                row["fixed_tolerance"] = tolerance_of(ref, precision)
            rows.append(row)
    return rows
