"""SD-1.5 + ControlNet at their published sizes, on this machine: export, steps, memory, serving.

    python -m benchmarks.studies.sd15.sd15_shape [--work DIR] [--parts export,steps,activations,serve]
                                    [--precisions fp32,fp16] [--unet merged,separate] [--rebuild-zoo]
    make bench-sd15

The twin is built (``rfad tiny --shape sd15``, timed like the exports) when ``--work`` has none
or with ``--rebuild-zoo``. Parts replace only their own rows of the results file (the export
part only the precisions it ran, the serve part only its routes), so they can be run one at a time.

Not part of ``make bench`` (the 15-minute suite): it builds the random-weight twin of production
(``rfad tiny --shape sd15``, 8.5 GB), exports it in fp32 and fp16 (``rfad-export onnx``, about
13 and 6.6 GB), and needs up to about 8 GB of memory and an hour or more on two cores. Parts:

- ``export``: per component, the wall time and peak resident memory of its steps, file sizes and
  parity (from the export manifest and parity.json: the worst output, its tolerance and, in fp16,
  PyTorch's own float16 distance there); per export, run under ``/usr/bin/time -v``, the wall time,
  the peak of the process tree (sampled every 0.1 s: steps and the parent at once) and
  ``/usr/bin/time``'s maximum resident set size (the largest single process), against the bound
  2.5x the fp32 weights of the largest graph;
- ``steps``: one step per graph, PyTorch eager vs onnxruntime, batch 2, 512 px, each in a fresh process;
- ``activations``: memory one onnxruntime run adds over its loaded session, per component at
  batch 1, 2 and 4 (512 px), and the line through them (batches 8 and 16: ESTIMATES from it);
  ``sd15_report.py`` computes the memory plan (:mod:`memory_plan`) from them and the exports;
- ``serve``: one ``rfad_pipeline`` request (512 px, 2 steps, one candidate, the judge) on the
  local Triton server, merged and separate ControlNet+UNet, against the same loop in process;
  (served - in process) / component calls, and the BLS overhead per call from the server's
  metrics (bls_metrics.py: round trip minus the called model's queue + compute).

Writes benchmarks/results/sd15_shape.json (rows tagged by ``part``); ``report.py`` renders
docs/performance.md from it and ``docs/render.py`` the measured block of docs/export.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from benchmarks.common import CACHE, RESULTS, write_results
from benchmarks.studies.sd15.memory_plan import fit_line
from benchmarks.suite.bls_metrics import bls_breakdown, overhead_ms_per_call, scrape

BIN = Path(sys.executable).parent
# Imported once by the steps' forkserver (rfad.isolated), so that each measured step starts at once.
STEP_LIBRARIES = ("torch", "diffusers", "onnxruntime")
SIZE, BATCH, STEPS = 512, 2, 2
ACTIVATION_BATCHES = (1, 2, 4)
ESTIMATED_BATCHES = (8, 16)  # the profiles' largest (datacenter: 16), from the line through the measured ones
PARTS = ("export", "steps", "activations", "serve")
PROMPT = "a bottle on a marble table, studio light"


def _time_v(report: Path) -> dict:
    """``/usr/bin/time -v``'s maximum resident set size (the largest single process: the command's
    own or a child it reaped) and elapsed wall time, from its report."""
    fields = dict(line.strip().rsplit(": ", 1) for line in report.read_text().splitlines() if ": " in line)
    clock = [float(part) for part in fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")]
    return {"time_v_max_rss_bytes": int(fields["Maximum resident set size (kbytes)"]) * 1024,
            "time_v_wall_s": sum(value * 60**i for i, value in enumerate(reversed(clock)))}


def _run_measured(command: list[str], log: Path, check: bool = True) -> dict:
    """Run ``command`` under ``/usr/bin/time -v``; its wall time, the peak RSS of its whole process
    tree (sampled every 0.1 s: several processes can be alive at once), ``/usr/bin/time``'s own
    numbers (:func:`_time_v`) and its exit code (``check``: a failure stops the benchmark)."""
    report = log.with_suffix(".time")
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(report)] + command, stdout=out,
                                   stderr=subprocess.STDOUT)
        root, tree_peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            total = 0
            try:
                for p in root.children(recursive=True):  # not /usr/bin/time itself
                    total += p.memory_info().rss
            except psutil.Error:
                pass
            tree_peak = max(tree_peak, total)
            time.sleep(0.1)
    if process.returncode and check:
        raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode}); see {log}")
    return {"wall_s": time.perf_counter() - start, "tree_peak_bytes": tree_peak, **_time_v(report),
            "exit_code": process.returncode,
            "command": " ".join(["/usr/bin/time", "-v"] + [Path(c).name if c.startswith("/") else c for c in command])}


def _parity_fields(diffs: list[dict]) -> dict:
    """A component's parity rows summed up by its worst output (largest difference / tolerance):
    that difference, its tolerance, PyTorch's own float16 distance there (fp16), all within."""
    worst = max(diffs, key=lambda r: r["max_abs_diff"] / r["tolerance"], default=None)
    if worst is None:
        return {"max_abs_diff": None, "tolerance": None, "torch_fp16_diff": None, "parity_ok": None}
    # fp16: the graph's distance over PyTorch's own float16 distance, output by output (min, max).
    ratios = [r["max_abs_diff"] / r["torch_fp16_diff"] for r in diffs if r.get("torch_fp16_diff")]
    return {"max_abs_diff": worst["max_abs_diff"], "tolerance": worst["tolerance"],
            "torch_fp16_diff": worst.get("torch_fp16_diff"), "parity_ok": all(r["ok"] for r in diffs),
            "over_torch_fp16": [min(ratios), max(ratios)] if ratios else None}


def _failed_export_rows(out: Path, precision: str) -> list[dict]:
    """Per component of an export that stopped on its parity check (it writes no manifest): the
    files it wrote and the parity rows it recorded; the "all" row gets the error line."""
    parity = json.loads((out / "parity.json").read_text())["rows"] if (out / "parity.json").is_file() else []
    rows = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and (p / "model.onnx").is_file()):
        rows.append({"part": "export", "precision": precision, "component": folder.name,
                     "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
                     **_parity_fields([r for r in parity if r["component"] == folder.name])})
    return rows


def export_part(zoo: Path, work: Path, precisions: list[str]) -> list[dict]:
    """Each export under /usr/bin/time. An export that fails its parity check is recorded (with
    what it wrote and the error), not fatal: at these sizes that is itself a result."""
    rows = []
    for precision in precisions:
        out = work / f"onnx-{precision}"
        command = ["rfad-export", "onnx", "--models", str(zoo), "--out", str(out)] + (["--fp16"] * (precision == "fp16"))
        print(f"[export] {precision}: {' '.join(command)}", flush=True)
        log = work / f"export-{precision}.log"
        usage = _run_measured([str(BIN / command[0])] + command[1:], log, check=False)
        if usage["exit_code"] and not (out / "parity.json").is_file():
            raise SystemExit(f"{' '.join(command)} failed (exit {usage['exit_code']}); see {log}")
        # The bound is 2.5 x the fp32 weights of the largest graph, whichever precision is exported
        # (a failed export writes no manifest: the fp32 export's says the same weights).
        manifest_path = (work / "onnx-fp32" if usage["exit_code"] else out) / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        bound = 2.5 * max(f["weight_bytes_fp32"] for f in manifest["files"].values()) if manifest else None
        errors = [line for line in log.read_text().splitlines() if line.startswith("Error:")]
        rows.append({"part": "export", "precision": precision, "component": "all", **usage, "bound_bytes": bound,
                     "within_bound": bound is not None
                     and max(usage["tree_peak_bytes"], usage["time_v_max_rss_bytes"]) <= bound,
                     "error": errors[-1] if usage["exit_code"] and errors else None})
        if usage["exit_code"]:
            rows += _failed_export_rows(out, precision)
            continue
        parity = json.loads((out / "parity.json").read_text())["rows"]
        for name, files in manifest["files"].items():
            diffs = [r for r in parity if r["component"] == name]
            rows.append({"part": "export", "precision": precision, "component": name, "bytes": files["bytes"],
                         "weight_bytes_fp32": files["weight_bytes_fp32"], "external_data": files["external_data"],
                         "trace_s": files["trace"]["seconds"], "trace_peak_bytes": files["trace"]["peak_rss_bytes"],
                         "finish_s": files["finish"]["seconds"], "finish_peak_bytes": files["finish"]["peak_rss_bytes"],
                         **_parity_fields(diffs)})
    return rows


def _manifest(onnx: Path) -> dict:
    return json.loads((onnx / "manifest.json").read_text())


def steps_part(zoo: Path, onnx: Path) -> list[dict]:
    from benchmarks.studies.sd15.sd15_steps import onnxruntime_step, torch_step

    from rfad.isolated import run_isolated, step_processes

    manifest, rows = _manifest(onnx), []
    with step_processes(preload=STEP_LIBRARIES):
        for name, spec in manifest["components"].items():
            print(f"[steps] {name}", flush=True)
            repeats = 1 if name in ("unet", "controlnet_unet", "controlnet") else 2
            eager, _ = run_isolated(torch_step, str(zoo), name, manifest["facts"], BATCH, SIZE, repeats)
            ort, _ = run_isolated(onnxruntime_step, str(onnx / manifest["files"][name]["file"]), spec, "fp32", BATCH,
                                  SIZE, repeats)
            rows.append({"part": "steps", "component": name, "batch": BATCH, "size": SIZE,
                         "torch_eager_s": eager["seconds"], "onnxruntime_s": ort["seconds"],
                         "onnxruntime_load_s": ort["load_s"], "session_bytes": ort["session_bytes"]})
    return rows


def activations_part(onnx: Path) -> list[dict]:
    """What one onnxruntime run adds over its loaded session, per component and measured batch,
    and the least-squares line through them at :data:`ESTIMATED_BATCHES` (rows marked estimates).
    The memory plan is computed from these rows and the exports' file sizes by sd15_report.py."""
    from benchmarks.studies.sd15.sd15_steps import onnxruntime_step

    from rfad.isolated import run_isolated, step_processes

    manifest, rows = _manifest(onnx), []
    with step_processes(preload=STEP_LIBRARIES):
        for name, spec in manifest["components"].items():
            measured = {}
            for batch in ACTIVATION_BATCHES:
                print(f"[activations] {name} batch {batch}", flush=True)
                result, _ = run_isolated(onnxruntime_step, str(onnx / manifest["files"][name]["file"]), spec, "fp32",
                                         batch, SIZE, 0)
                measured[batch] = result["activation_bytes"]
                rows.append({"part": "activations", "component": name, "batch": batch, "estimate": False,
                             "activation_bytes": result["activation_bytes"], "seconds": result["seconds"]})
            intercept, slope = fit_line(measured)
            for batch in ESTIMATED_BATCHES:
                rows.append({"part": "activations", "component": name, "batch": batch, "estimate": True,
                             "activation_bytes": intercept + slope * batch})
    return rows


def _in_process(onnx: str, merged: bool, steps: int, size: int) -> dict:
    """One attempt of the loop over the onnxruntime runner, with the judge (in a process of its own)."""
    from rfad.canvas import CanvasSpec, prepare_canvas
    from rfad.pipeline.generate import generate
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.onnx_runner import OnnxRunner
    from rfad.pipeline.settings import GenerationSettings
    from rfad.tiny.products import draw_product

    runner = OnnxRunner(Path(onnx), merged=merged)
    canvas = prepare_canvas(draw_product("bottle"), CanvasSpec(width=size, height=size))
    settings = GenerationSettings(steps=steps, seed=0, candidates=1, max_attempts=1, threshold=0.0)
    start = time.perf_counter()
    generate(runner, canvas, PROMPT, settings, caption="red bottle", judge=RunnerJudge(runner))
    return {"seconds": time.perf_counter() - start, "calls": runner.calls}


def serve_part(onnx: Path, work: Path, modes: list[str]) -> list[dict]:
    import io

    from rfad.client import RfadClient
    from rfad.export.api import write_triton_repo
    from rfad.isolated import run_isolated, step_processes
    from rfad.serving.launcher import TritonServer
    from rfad.tiny.products import draw_product

    png = io.BytesIO()
    draw_product("bottle").save(png, format="PNG")
    rows = []
    for mode in modes:
        print(f"[serve] {mode}: in process", flush=True)
        with step_processes(preload=STEP_LIBRARIES):
            local, usage = run_isolated(_in_process, str(onnx), mode == "merged", STEPS, SIZE)
        repo = write_triton_repo(onnx, work / f"repo-{mode}", unet_mode=mode, canvas_size=SIZE)
        print(f"[serve] {mode}: Triton", flush=True)
        with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=900) as server:
            client = RfadClient(server.grpc_url, retries=0, timeout_s=3600)
            times = []
            for _ in range(2):  # the first request also grows the python stubs' shared memory
                before = scrape(server.metrics_url)
                start = time.perf_counter()
                client.generate(png.getvalue(), PROMPT, caption="red bottle", seed=0, steps=STEPS, max_attempts=1,
                                threshold=0.0)
                times.append(time.perf_counter() - start)
            bls = bls_breakdown(before, scrape(server.metrics_url))  # the second request's calls
            group = psutil.Process(server.process.pid)
            served_rss = sum(p.memory_info().rss for p in [group] + group.children(recursive=True))
        rows.append({"part": "serve", "unet": mode, "size": SIZE, "steps": STEPS, "in_process_s": local["seconds"],
                     "in_process_peak_bytes": usage["peak_rss_bytes"], "served_first_s": times[0],
                     "served_s": times[1], "server_rss_bytes": served_rss, "component_calls": local["calls"],
                     "overhead_per_bls_call_s": (times[1] - local["seconds"]) / local["calls"],
                     "bls": bls, "bls_overhead_ms_per_call": overhead_ms_per_call(bls),
                     "startup_s": server.startup_s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=CACHE / "sd15", help="zoo, graphs and repositories (GBs)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    parser.add_argument("--precisions", default="fp32,fp16", help="the exports of the export part, comma-separated")
    parser.add_argument("--unet", default="merged,separate", help="the serve part's ControlNet+UNet routes")
    parser.add_argument("--rebuild-zoo", action="store_true", help="build the twin again even if --work has one")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}")
    work, zoo = args.work, args.work / "zoo"
    work.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "sd15_shape.json"
    kept = json.loads(previous.read_text())["rows"] if previous.is_file() else []
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "fp16"}:
        parser.error(f"--precisions: {args.precisions!r} is not a list of fp32, fp16")
    rows = []
    if args.rebuild_zoo or not (zoo / "rfad-models.json").is_file():
        print(f"[zoo] rfad tiny --shape sd15 --out {zoo}", flush=True)
        usage = _run_measured([str(BIN / "rfad"), "tiny", "--shape", "sd15", "--out", str(zoo)], work / "zoo.log")
        rows.append({"part": "zoo", "component": "all", **usage,
                     "bytes": sum(f.stat().st_size for f in zoo.rglob("*") if f.is_file())})
    if "export" in parts:
        rows += export_part(zoo, work, precisions)
    onnx = work / "onnx-fp32"
    if "steps" in parts:
        rows += steps_part(zoo, onnx)
    if "activations" in parts:
        rows += activations_part(onnx)
    if "serve" in parts:
        modes = [m.strip() for m in args.unet.split(",") if m.strip()]
        if not modes or set(modes) - {"merged", "separate"}:
            parser.error(f"--unet: {args.unet!r} is not a list of merged, separate")
        rows += serve_part(onnx, work, modes)
    settings = {"size": SIZE, "batch": BATCH, "serve_steps": STEPS, "activation_batches": list(ACTIVATION_BATCHES),
                "cpu_count": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total}
    # A part replaces its own rows only: the export's of the precisions it ran, serve's of its modes.
    replaced = {(r["part"], r.get("precision"), r.get("unet")) for r in rows}
    kept = [r for r in kept if (r["part"], r.get("precision"), r.get("unet")) not in replaced]
    path = write_results("sd15_shape", kept + rows, settings)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
