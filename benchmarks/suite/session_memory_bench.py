"""Memory and latency of each component's onnxruntime session: rfad's memory options beside the alternatives.

    python -m benchmarks.suite.session_memory_bench [--runs 40] [--repeats 7] [--components saliency,...]

For every component of the tiny export (built into the benchmark cache), at the sizes the server
feeds it (the canvas for the diffusion components; the judge's size for depth, saliency, rfnet):

- memory: a fresh process per (component, option set) opens the session, runs the largest
  batch once (the warm-up), then ``--runs`` batches drawn as the dynamic batcher hands them out
  (1 to 16, small ones most often); the session's resident memory (process RSS minus the RSS
  before the session opened) after the warm-up and after the runs;
- latency, side by side in one process: the sessions of onnxruntime's defaults and of rfad's
  options run in turn, ``--repeats`` times at batches 1, 4 and 16; medians.

Option sets: ``defaults`` (onnxruntime's), ``no pattern``, ``no pattern, exact arena``
(kSameAsRequested), ``no arena`` (and no pattern), and ``rfad`` (rfad.onnx_session.MEMORY_OPTIONS,
the component's own). Writes benchmarks/results/session_memory.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.common import ROOT, SHAPES, markdown_table, module_command, shape_models, write_results

OPTION_SETS = {
    "defaults": None,
    "no pattern": {"memory_pattern": False},
    "no pattern, exact arena": {"memory_pattern": False, "exact_arena": True},
    "no arena": {"arena": False, "memory_pattern": False},
    "rfad": "component",
}
BATCHES = (1, 2, 2, 3, 4, 4, 5, 6, 8, 12, 16)  # what a dynamic batcher under mixed load hands out
LATENCY_BATCHES = (1, 4, 16)


def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024


def _session(onnx: Path, component: str, option_set: str):
    from rfad.components.manifest import ExportManifest
    from rfad.onnx_session import MemoryOptions, apply_memory_options, open_session, session_options

    manifest = ExportManifest.read(onnx / "manifest.json", f"--onnx {onnx}")
    path = onnx / manifest.files[component]["file"]
    chosen = OPTION_SETS[option_set]
    if chosen == "component":
        return open_session(path, manifest.precision, component=component)
    import onnxruntime

    options = session_options(manifest.precision)
    if chosen is not None:
        apply_memory_options(options, MemoryOptions(**chosen))
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(onnx: Path, component: str, size: int) -> dict[int, dict]:
    from rfad.components.manifest import ExportManifest
    from rfad.components.samples import sample_inputs

    spec = ExportManifest.read(onnx / "manifest.json", f"--onnx {onnx}").specs[component]
    return {b: sample_inputs(spec, b, size, size) for b in sorted(set(BATCHES + LATENCY_BATCHES))}


def child(onnx: Path, component: str, option_set: str, size: int, runs: int) -> dict:
    """The memory measurement of one (component, option set), in this (fresh) process."""
    feeds = _feeds(onnx, component, size)
    before = _rss_mib()
    session = _session(onnx, component, option_set)
    session.run(None, feeds[max(BATCHES)])
    warm = _rss_mib() - before
    rng = random.Random(0)
    for _ in range(runs):
        session.run(None, feeds[rng.choice(BATCHES)])
    after = _rss_mib() - before
    return {"component": component, "options": option_set, "session_after_warm_up_mib": warm,
            "session_after_runs_mib": after, "growth": after / warm, "runs": runs}


def latencies(onnx: Path, component: str, size: int, repeats: int) -> list[dict]:
    """Median seconds per run of the ``defaults`` and ``rfad`` sessions, interleaved, per batch."""
    feeds = _feeds(onnx, component, size)
    sessions = {name: _session(onnx, component, name) for name in ("defaults", "rfad")}
    rows = []
    for batch in LATENCY_BATCHES:
        times = {name: [] for name in sessions}
        for name, session in sessions.items():  # one untimed run each: first-use costs
            session.run(None, feeds[batch])
        for _ in range(repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, feeds[batch])
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        rows.append({"component": component, "batch": batch, "defaults_s": medians["defaults"],
                     "rfad_s": medians["rfad"], "rfad_over_defaults": medians["rfad"] / medians["defaults"],
                     "repeats": repeats})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="mixed batches after the warm-up (memory)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved runs per batch (latency)")
    parser.add_argument("--components", default="", help="comma-separated subset (default: every exported one)")
    parser.add_argument("--child", nargs=3, metavar=("COMPONENT", "OPTIONS", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = SHAPES["tiny"]
    _, onnx = shape_models(shape)
    if args.child:
        component, option_set, size = args.child
        print(json.dumps(child(onnx, component, option_set, int(size), args.runs)))
        return
    from rfad.components.manifest import ExportManifest
    from rfad.components.registry import COMPONENTS

    manifest = ExportManifest.read(onnx / "manifest.json", f"--onnx {onnx}")
    chosen = [c for c in args.components.split(",") if c] or list(manifest.files)
    memory, latency = [], []
    for component in chosen:
        size = manifest.facts.judge_size if COMPONENTS[component].group == "judge" else shape.size
        for option_set in OPTION_SETS:
            command = module_command("benchmarks.suite.session_memory_bench", "--runs", str(args.runs), "--child",
                                     component, option_set, str(size))
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            memory.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{component:16s} {option_set:24s} {memory[-1]['session_after_warm_up_mib']:7.1f} -> "
                  f"{memory[-1]['session_after_runs_mib']:7.1f} MiB ({memory[-1]['growth']:.2f}x)", flush=True)
        latency += latencies(onnx, component, size, args.repeats)
        for row in latency[-len(LATENCY_BATCHES):]:
            print(f"{component:16s} batch {row['batch']:2d}: defaults {row['defaults_s'] * 1000:8.1f} ms, rfad "
                  f"{row['rfad_s'] * 1000:8.1f} ms ({row['rfad_over_defaults']:.2f}x)", flush=True)
    rows = [{"part": "memory", **r} for r in memory] + [{"part": "latency", **r} for r in latency]
    path = write_results("session_memory", rows, {"shape": shape.__dict__, "runs": args.runs, "repeats": args.repeats,
                                                   "batches": list(BATCHES), "latency_batches": list(LATENCY_BATCHES)})
    print(markdown_table(memory, [("component", "component"), ("options", "options"),
                                  ("session_after_warm_up_mib", "after warm-up MiB"),
                                  ("session_after_runs_mib", "after runs MiB"), ("growth", "growth")]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
