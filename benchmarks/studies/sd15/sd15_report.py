"""The SD-1.5 study's results (benchmarks/results/sd15_shape.json) as Markdown: its section of
docs/performance.md and its block of docs/export.md, rendered by docs/render.py through
:func:`block`; nothing typed by hand."""

from __future__ import annotations

from benchmarks.common import RESULTS, machine_line, markdown_table
from benchmarks.studies.sd15.memory_plan import DEVICES, FP16_ACTIVATION_FACTOR, JETSON_USABLE, RUNTIME_OVERHEAD

GIB = 1024**3


def _gib(value) -> str:
    return "" if value is None else f"{value / GIB:.2f}"


def _part(result: dict, part: str) -> list[dict]:
    return [r for r in result["rows"] if r["part"] == part]


def _parity(r: dict) -> str:
    """The worst output's difference; its tolerance and PyTorch's own float16 distance where recorded."""
    if r.get("max_abs_diff") is None:
        return "not compared"
    details = [f"tolerance {r['tolerance']:.1e}"] if r.get("tolerance") else []
    if r.get("torch_fp16_diff") is not None:
        details.append(f"PyTorch fp16 {r['torch_fp16_diff']:.1e}")
    return f"{r['max_abs_diff']:.1e} ({'; '.join(['ok' if r['parity_ok'] else 'FAILED'] + details)})"


def _step(r: dict, step: str) -> str:
    if r.get(f"{step}_s") is None:
        return "not recorded"  # an export stopped by its parity check writes no manifest
    return f"{r[f'{step}_s']:.0f} s, {_gib(r[f'{step}_peak_bytes'])}"


def export_table(result: dict) -> str:
    exports = [r for r in _part(result, "export") if r["component"] == "all"]
    totals = [{"precision": r["precision"], "wall": f"{r['wall_s'] / 60:.1f}", "tree": _gib(r["tree_peak_bytes"]),
               "single": _gib(r["time_v_max_rss_bytes"]), "bound": _gib(r["bound_bytes"]),
               "ok": "yes" if r["within_bound"] else "NO",
               "result": f"stopped: {r['error'] or 'exit ' + str(r['exit_code'])}" if r.get("exit_code") else "completed"}
              for r in exports]
    parts = [{**r, "size": f"{r['bytes'] / 1e9:.3f}",
              "weights": f"{r['weight_bytes_fp32'] / 1e9:.3f}" if r.get("weight_bytes_fp32") else "",
              "trace": _step(r, "trace"), "finish": _step(r, "finish"), "parity": _parity(r),
              "ratio": "{:.2f}-{:.2f}".format(*r["over_torch_fp16"]) if r.get("over_torch_fp16") else ""}
             for r in _part(result, "export") if r["component"] != "all"]
    return "\n\n".join([
        markdown_table(totals, [("precision", "export"), ("wall", "minutes"), ("tree", "peak RSS, all processes, GiB"),
                                ("single", "largest process peak (/usr/bin/time), GiB"),
                                ("bound", "bound (2.5 x largest graph's fp32 weights), GiB"), ("ok", "within"),
                                ("result", "result")]),
        markdown_table(parts, [("precision", "export"), ("component", "component"), ("weights", "fp32 weights GB"),
                               ("size", "files GB"), ("trace", "trace step: s, peak GiB"),
                               ("finish", "finish + parity step: s, peak GiB"), ("parity", "max abs diff"),
                               ("ratio", "fp16: graph / PyTorch fp16 distance, per output")])])


def steps_table(result: dict) -> str:
    rows = [{**r, "x": f"{r['torch_eager_s'] / r['onnxruntime_s']:.2f}", "load": f"{r['onnxruntime_load_s']:.1f}",
             "session": _gib(r["session_bytes"])} for r in _part(result, "steps")]
    return markdown_table(rows, [("component", "component"), ("batch", "batch"), ("size", "px"),
                                 ("torch_eager_s", "PyTorch eager s"), ("onnxruntime_s", "onnxruntime s"),
                                 ("x", "x eager"), ("load", "session load s"), ("session", "session RSS GiB")])


def _file_bytes(result: dict, precision: str) -> dict[str, int]:
    return {r["component"]: r["bytes"] for r in _part(result, "export")
            if r["component"] != "all" and r["precision"] == precision}


def plan(result: dict) -> tuple[list[dict], str]:
    """The memory plan's rows (merged and separate) from the activation rows and the exports'
    file sizes, and where its fp16 weights came from: the fp16 export's files, else half the fp32
    ones (said in the table's text)."""
    from benchmarks.studies.sd15.memory_plan import fit_line, plan_rows

    measured: dict[str, dict[int, float]] = {}
    for r in _part(result, "activations"):
        if not r["estimate"]:
            measured.setdefault(r["component"], {})[r["batch"]] = r["activation_bytes"]
    fits = {name: (*fit_line(points), points) for name, points in measured.items() if len(points) >= 2}
    weights, source = _file_bytes(result, "fp16"), "the fp16 export's files"
    if not weights:
        weights = {name: size // 2 for name, size in _file_bytes(result, "fp32").items()}
        source = "half the fp32 export's files (no fp16 export measured yet)"
    if not fits or not weights:
        return [], source
    return [row for mode in ("merged", "separate") for row in plan_rows(weights, fits, mode)], source


def activations_table(result: dict) -> str:
    by_component: dict[str, dict] = {}
    for r in _part(result, "activations"):
        cell = _gib(r["activation_bytes"]) + (" (est.)" if r["estimate"] else "")
        by_component.setdefault(r["component"], {"component": r["component"]})[str(r["batch"])] = cell
    batches = sorted({r["batch"] for r in _part(result, "activations")})
    fp32, fp16 = _file_bytes(result, "fp32"), _file_bytes(result, "fp16")
    for name, row in by_component.items():
        row["fp32"] = f"{fp32[name] / 1e9:.3f}" if name in fp32 else ""
        row["fp16"] = f"{fp16[name] / 1e9:.3f}" if name in fp16 else ""
    return markdown_table(list(by_component.values()),
                          [("component", "component"), ("fp32", "fp32 graph GB"), ("fp16", "fp16 graph GB")]
                          + [(str(b), f"batch {b}, GiB") for b in batches])


def plan_table(rows: list[dict]) -> str:
    rows = [{**r, "w": f"{r['weights_gb']:.1f}", "a": f"{r['activations_gb']:.1f}", "t": f"{r['total_gb']:.1f}"}
            for r in rows]
    return markdown_table(rows, [("deployment", "profile"), ("unet", "ControlNet+UNet"), ("batch", "largest batch"),
                                 ("instances", "model instances"), ("w", "weights GB"), ("a", "activations GB"),
                                 ("t", "total GB")] + [(d, d) for d in DEVICES])


def _residual_share(result: dict) -> str:
    """The separate route's BLS overhead in its controlnet and unet calls, from the server's metrics."""
    row = next((r for r in result["rows"] if r["part"] == "serve" and r.get("unet") == "separate" and r.get("bls")), None)
    if row is None or not {"controlnet", "unet"} <= set(row["bls"]):
        return ""
    total = sum(m["bls_overhead_ms"] for m in row["bls"].values())
    return (f": {row['bls']['controlnet']['bls_overhead_ms']:.0f} ms in its controlnet calls and "
            f"{row['bls']['unet']['bls_overhead_ms']:.0f} ms in its unet calls, of {total:.0f} ms over the request")


def serve_table(result: dict) -> str:
    rows = [{**r, "rss": _gib(r["server_rss_bytes"]), "ms": f"{r['overhead_per_bls_call_s'] * 1000:.0f}",
             "bls_ms": "not measured" if r.get("bls_overhead_ms_per_call") is None
             else f"{r['bls_overhead_ms_per_call']:.1f}"} for r in _part(result, "serve")]
    return markdown_table(rows, [("unet", "ControlNet+UNet"), ("in_process_s", "in process s"),
                                 ("served_first_s", "served, first request s"), ("served_s", "served, second s"),
                                 ("component_calls", "component calls"), ("ms", "(served - in process) / calls, ms"),
                                 ("bls_ms", "BLS overhead per call (server metrics), ms"),
                                 ("startup_s", "server start s"), ("rss", "server RSS GiB")])


def page_section(result: dict, measured: str) -> list[str]:
    """docs/performance.md's section on the SD-1.5 twin (tables of the parts that were run)."""
    lines = [measured,
             "Run by `make bench-sd15` (`benchmarks/studies/sd15/sd15_shape.py`, not part of `make bench`) on a machine shared "
             "with other jobs, so wall times are upper bounds; what the numbers mean for an export and a "
             "deployment: [export.md](export.md#memory-at-sd-15-sizes).", ""]
    if _part(result, "zoo"):
        zoo = _part(result, "zoo")[0]
        lines += [f"`rfad tiny --shape sd15` built the twin ({zoo['bytes'] / 1e9:.1f} GB) in {zoo['wall_s']:.0f} s, "
                  f"peak RSS {_gib(zoo['time_v_max_rss_bytes'])} GiB (`/usr/bin/time -v`).", ""]
    if _part(result, "export"):
        lines += ["### Export (`rfad-export onnx` on the twin)", "", export_table(result), ""]
    if _part(result, "steps"):
        lines += ["### One step per graph on CPU", "", steps_table(result), ""]
    if _part(result, "activations"):
        lines += ["### Weights and activation memory per component (CPU, onnxruntime, fp32 graphs, 512 px)", "",
                  "Memory one run adds over the loaded session, measured in a fresh process per cell; batches 8 and 16 "
                  "are ESTIMATES from the least-squares line through batches 1, 2 and 4.", "", activations_table(result),
                  ""]
    rows, source = plan(result)
    if rows:
        lines += ["### Memory plan (ESTIMATES)", "", _plan_text(source)[0].upper() + _plan_text(source)[1:], "",
                  plan_table(rows), ""]
    if _part(result, "serve"):
        lines += ["### One served request at 512 px, 2 steps (CPU)", "",
                  "One candidate, one attempt, the judge through the component models, in process (one onnxruntime "
                  "session per component, onnxruntime's default threads: one per core) and served (one instance per "
                  "component, `rfad.onnx_session.COMPONENT_THREADS`: a thread per core). (second served request - "
                  "in process) / component calls is the served request's extra time spread over its calls; at these "
                  "sizes each call computes for seconds, so it carries the noise of minute-long runs on a shared "
                  "machine, not what crossing the BLS boundary costs; that is the next column, from the server's "
                  "metrics over the second request (the pipeline's round trip per call minus Triton's queue + "
                  "compute time of the called model). In the separate route the ControlNet's 13 residuals (about "
                  "54 MB per CFG step at 512 px in fp32) cross the boundary twice, out of the controlnet call and "
                  "into the unet call" + _residual_share(result) + ".", "",
                  serve_table(result), ""]
    return lines[:-1] if lines[-1] == "" else lines


def _plan_text(weights_source: str) -> str:
    """How the memory plan was computed, for the text above its table."""
    return ("the GPU deployment profiles (docs/deploying.md), every model instance counted with its own fp16 weights "
            f"({weights_source}) and its own activations at the profile's max_batch_size for it, "
            f"{FP16_ACTIVATION_FACTOR} x the fp32 peaks measured on CPU (larger batches from the line through the "
            f"measured ones); plus {RUNTIME_OVERHEAD / 1e9:.1f} GB for CUDA context, runtime workspaces and processes; "
            f"a Jetson's memory is shared with its CPU and OS, {JETSON_USABLE:.0%} of it counted usable. Judge models "
            "(DPT-Large, U2-Net, RFNet) included.")


def export_page_block(result: dict | None, measured: str = "") -> str:
    """docs/export.md's measured block (rendered by docs/render.py): the export on the twin and the
    memory plan, or how to measure them where the results file has no such rows."""
    if result is None or not _part(result, "export"):
        return ("Not measured yet on this checkout: `make bench-sd15` (or `python -m benchmarks.studies.sd15.sd15_shape "
                "--parts export`) writes `benchmarks/results/sd15_shape.json`, then `python docs/render.py`.")
    lines = [f"From `benchmarks/studies/sd15/sd15_shape.py`. {measured.strip()} Every table of that run is on "
             "[Performance](performance.md#sd-15--controlnet-at-their-published-sizes-random-weight-twin); "
             "\"fp32 weights\" are those of the model(s) a component is made from (the whole VAE, the whole RFNet).", "",
             export_table(result)]
    rows, source = plan(result)
    if rows:
        lines += ["", "Memory plan, ESTIMATES: " + _plan_text(source), "", plan_table(rows)]
    else:
        lines += ["", "Memory plan: not measured yet (`python -m benchmarks.studies.sd15.sd15_shape --parts activations`)."]
    return "\n".join(lines)


def block(name: str) -> str:
    """The study's blocks (docs/render.py renders them): ``sd15 performance`` on docs/performance.md,
    ``sd15 export`` on docs/export.md."""
    import json

    path = RESULTS / "sd15_shape.json"
    result = json.loads(path.read_text()) if path.is_file() else None
    if name == "export":
        return export_page_block(result, machine_line(result) if result else "")
    if name == "performance":
        if result is None:
            return "Not measured yet: run `make bench-sd15`."
        return "\n".join(page_section(result, machine_line(result)))
    raise ValueError(f"<!-- generated:sd15 {name} -->: unknown block (known: performance, export)")
