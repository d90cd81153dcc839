"""``rfad-export onnx``: every component to ONNX, cleaned, checked against PyTorch at two shapes.

For each component of :func:`rfad.components.registry.component_specs`, in processes of its
own (:mod:`rfad.isolated`), so that memory goes back to the OS between components: trace
its module (:data:`rfad.components.modules.MODULES`, the torch runner's too) with the spec's
names and dynamic axes and save the PyTorch outputs of two parity cases; then, holding only the graph, fold its small
constants, optionally convert it to float16, write it with its weights streamed (external data
over the protobuf limit) and compare it in onnxruntime with those outputs (different batch,
non-square image), recording the max abs difference per output in ``parity.json``. A
difference over tolerance is an :class:`ExportError`. The steps are in
:mod:`rfad.export.onnx_steps`; an export that would not fit in the memory available says so
before it starts (:mod:`rfad.export.memory_check`).

The output folder is self-describing: ``manifest.json`` (an
:class:`rfad.components.manifest.ExportManifest`: facts, specs, files, settings, and per
component the time and peak memory of its steps), ``tokenizer/`` (CLIP) and
``caption_tokenizer/`` (RFNet's), and one ``<component>/model.onnx``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rfad.canvas import canvas_to_dict
from rfad.components.manifest import ExportManifest
from rfad.components.registry import component_specs, served_components
from rfad.components.specs import ComponentSpec, ModelFacts
from rfad.export.tolerances import FP16_REFERENCE_MARGIN
from rfad.models.model_set import ModelSet

PROTOBUF_LIMIT = 2 * 1024**3
WORK = "work"  # per-component folder of the raw graph and the references, removed when finished
# Imported once by the step processes' forkserver (rfad.isolated): what every step needs.
STEP_MODULES = ("rfad.export.step_libraries",)


class ExportError(RuntimeError):
    """Export or its parity check failed; the message names the component (and output)."""


def export_component(graph, spec: ComponentSpec, path: Path, facts: ModelFacts, opset: int,
                     external_data_threshold: int, vocab: int, fp16: bool = False) -> dict:
    """Export one module to ``path`` (model.onnx) in this process, without the parity check;
    returns the file facts. The steps of :func:`export_onnx`, for callers that hold a module."""
    from rfad.export.onnx_steps import RAW, finish_graph, quiet_export_logs, trace_to_onnx

    quiet_export_logs()
    work = path.parent / WORK
    trace_to_onnx(graph, spec, facts, vocab, opset, work / RAW)
    try:
        return finish_graph(work / RAW, path, external_data_threshold, fp16)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _isolated(function, *args, what: str):
    """``run_isolated`` with the step's errors as one-line :class:`ExportError` naming ``what``."""
    from rfad.isolated import run_isolated

    try:
        return run_isolated(function, *args, what=what)
    except ExportError:
        raise
    except Exception as exc:  # the exporter's and the runtime's errors are long; name the step first
        raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def export_onnx(model_set: ModelSet, out: str | Path, components: list[str] | None = None, opset: int = 17,
                external_data_threshold: int = PROTOBUF_LIMIT, fp16: bool = False, echo=print,
                renames: dict[str, dict[str, str]] | None = None, memory_check: bool = True,
                served: str | None = None) -> ExportManifest:
    """Export ``components`` (default: all the set provides) to ``out``; returns the manifest.

    ``served``: ``"merged"`` or ``"separate"`` keeps, of those, only the components a repository
    written with that ``--unet`` serves (:func:`rfad.components.registry.served_components`):
    ``merged`` skips ``controlnet`` and ``unet``, which would trace the largest models twice more.

    ``fp16``: every graph with float16 weights and arithmetic (float32 inputs and outputs),
    checked against the float32 PyTorch modules with :data:`rfad.export.tolerances.PARITY_TOLERANCE`
    ``["fp16"]`` or :data:`~rfad.export.tolerances.FP16_REFERENCE_MARGIN` times the distance of
    PyTorch's own float16 run, whichever is larger (:func:`rfad.export.parity.tolerance_of`).
    ``renames``: component -> {tensor key -> name}, tensors named otherwise than their roles
    (:func:`rfad.components.registry.component_specs`); the graphs, the manifest and everything
    built from it use those names. ``memory_check``: refuse, before exporting, an
    export whose estimated peak memory exceeds ``MemAvailable``.
    """
    from rfad.export.memory_check import memory_available
    from rfad.isolated import step_processes

    # Read before the step processes start (importing their libraries takes seconds), so that a
    # system that cannot say is refused at once.
    available_memory = memory_available() if memory_check else None
    if memory_check and available_memory is None:
        raise ExportError("--memory-check: this system does not report MemAvailable (/proc/meminfo), so the memory "
                          "the export needs cannot be checked; re-run with --no-memory-check to export without it")
    with step_processes(preload=STEP_MODULES):
        return _export_isolated(model_set, Path(out), components, opset, external_data_threshold, fp16, echo, renames,
                                available_memory, served)


def _export_isolated(model_set: ModelSet, out: Path, components, opset, external_data_threshold, fp16, echo, renames,
                     available_memory: int | None, served) -> ExportManifest:
    """:func:`export_onnx` inside its step processes; ``available_memory``: bytes to check the
    export's estimated peak against, or None not to check."""
    from rfad.export.memory_check import memory_shortfall
    from rfad.export.onnx_steps import finish_step, inspect_models, trace_step

    plan, _ = _isolated(inspect_models, model_set, renames, out, what="reading the models")
    facts = ModelFacts.from_dict(plan["facts"])
    specs = component_specs(facts, renames)
    available = list(specs)
    chosen = components or available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ExportError(f"unknown or unavailable components {unknown}; available: {available}"
                          + ("" if plan["has_judge"] else " (judge components need --rfnet, --depth, --saliency)"))
    if served is not None:
        chosen = served_components(chosen, served)
        if not chosen:
            raise ExportError(f"--components {','.join(components)}: none of them is served with --unet {served}")
    if available_memory is not None:
        shortfall = memory_shortfall({name: plan["weight_bytes"][name] for name in chosen}, available_memory,
                                     external_data_threshold)
        if shortfall:
            raise ExportError(f"this export {shortfall}")
    precision = "fp16" if fp16 else "fp32"
    files, parity = {}, []
    for name in chosen:
        start, work = time.perf_counter(), out / name / WORK
        has_half, traced = _isolated(trace_step, model_set, name, plan["facts"], renames, plan["vocab"][name], opset,
                                     work, fp16, what=f"{name}: tracing")
        if fp16 and not has_half:
            echo(f"{name}: PyTorch cannot run it in float16 on this CPU; its fp16 parity uses the fixed tolerance only "
                 "(parity.json: torch_fp16_missing)")
        (files[name], rows), finished = _isolated(finish_step, specs[name].to_dict(), work, out / name / "model.onnx",
                                                  external_data_threshold, fp16, what=f"{name}: finishing")
        files[name].update(weight_bytes_fp32=plan["weight_bytes"][name], trace=traced, finish=finished)
        parity += rows
        worst = max(rows, key=lambda r: r["max_abs_diff"] / r["tolerance"])
        peak = max(traced["peak_rss_bytes"], finished["peak_rss_bytes"])
        own = worst.get("torch_fp16_diff")
        echo(f"{name:<16} {time.perf_counter() - start:6.1f} s  {files[name]['bytes'] / 1e6:9.2f} MB  "
             f"peak {peak / 1024**3:5.2f} GiB  max |onnx - torch| {worst['max_abs_diff']:.2e} ({worst['output']})"
             + ("" if own is None else f", torch fp16 {own:.2e}"))
        beyond = [r for r in rows if (r.get("torch_fp16_diff") or 0) > r.get("fixed_tolerance", float("inf"))]
        if beyond:  # what the precision costs this model, whichever runtime serves it
            cost = max(r["torch_fp16_diff"] / r["fixed_tolerance"] for r in beyond)
            echo(f"{name}: float16 itself moves {len(beyond)} of {len(rows)} compared outputs beyond the fixed "
                 f"tolerance (PyTorch's own float16 run: up to {cost:.2f}x it); they pass within "
                 f"{FP16_REFERENCE_MARGIN:g}x that run's distance")
    (out / "parity.json").write_text(json.dumps({"precision": precision, "rows": parity}, indent=2) + "\n")
    failed = [r for r in parity if not r["ok"]]
    if failed:
        f = failed[0]
        own = f.get("torch_fp16_diff")
        own = "" if own is None else f"; PyTorch's own float16 run differs by {own:.3g}"
        raise ExportError(f"parity check failed for {f['component']} output {f['output']}: max abs diff "
                          f"{f['max_abs_diff']:.3g} > tolerance {f['tolerance']:.3g}{own} (see {out / 'parity.json'})")
    manifest = ExportManifest(
        facts=facts, specs={name: specs[name] for name in chosen}, scheduler_config=plan["scheduler_config"],
        vae_scale_factor=plan["vae_scale_factor"], precision=precision, opset=opset, files=files,
        models={k: str(v) for k, v in vars(model_set).items() if isinstance(v, Path)},
        canvas=canvas_to_dict(model_set.canvas) if model_set.canvas is not None else {},
    )
    manifest.write(out / "manifest.json")
    return manifest
