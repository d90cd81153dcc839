"""Shared benchmark plumbing: machine facts, timing, JSON results and Markdown tables.

Every benchmark writes ``benchmarks/results/<name>.json`` with the machine and versions it ran
on; the tables of the docs are rendered from those files, never typed by hand. The benchmarks
are modules of the ``benchmarks`` package, run from the checkout's root
(``python -m benchmarks.suite.run_all``); :func:`module_command` starts one in a fresh process.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent  # the checkout
RESULTS = ROOT / "benchmarks" / "results"
# Models built and exported by the benchmarks (random weights: speed does not depend on them),
# reused across scripts of one suite run; delete the folder to rebuild.
CACHE = ROOT / "benchmarks" / ".cache"


def render_docs() -> None:
    """Re-render every generated block of the docs (``python docs/render.py``), e.g. after new results."""
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "docs" / "render.py")], check=True, cwd=ROOT)


def module_command(module: str, *args: str) -> list[str]:
    """The command line that runs benchmark ``module`` (``benchmarks.suite.soak``) in a fresh
    Python process; run it with ``cwd=ROOT`` (:data:`ROOT`), where the package is importable."""
    import sys

    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class BenchShape:
    """A model size the benchmarks run at: UNet widths, canvas side and DDIM steps."""

    name: str
    unet_channels: tuple[int, ...]
    size: int
    steps: int

    def zoo_shape(self):
        from rfad.tiny.shapes import tiny_shape

        return tiny_shape(unet_channels=self.unet_channels)


# rfad_pipeline instances of the served benchmarks: up to this many requests run their loops at
# once, so concurrent clients' component calls can meet in the dynamic batcher.
PIPELINE_INSTANCES = 4

# tiny: the test zoo; small: UNet channels 64/128/256 at 256 px, 20 steps (the issues' "small").
SHAPES = {
    "tiny": BenchShape("tiny", (32, 64), 128, 8),
    "small": BenchShape("small", (64, 128, 256), 256, 20),
}


def shape_models(shape: BenchShape, echo=print) -> tuple[Path, Path]:
    """(zoo folder, ONNX folder) of ``shape``, built and exported once into :data:`CACHE`."""
    from rfad.components.manifest import MANIFEST_FORMAT
    from rfad.export.api import export_onnx
    from rfad.models.model_set import ModelSet
    from rfad.tiny.zoo import build_tiny_zoo

    root = CACHE / shape.name
    zoo, onnx = root / "zoo", root / "onnx"
    if not (zoo / "rfad-models.json").is_file():
        echo(f"[{shape.name}] building random-weight models (UNet channels {shape.unet_channels})")
        build_tiny_zoo(zoo, seed=0, shape=shape.zoo_shape())
    if not (onnx / "manifest.json").is_file() or _manifest_format(onnx) != MANIFEST_FORMAT:
        echo(f"[{shape.name}] exporting ONNX")
        export_onnx(ModelSet.resolve(zoo), onnx, echo=lambda line: echo("    " + line))
    return zoo, onnx


def _manifest_format(onnx: Path) -> int:
    """The format of a cached export's manifest (an export by an older rfad is redone)."""
    return json.loads((onnx / "manifest.json").read_text()).get("format", 1)


def machine() -> dict:
    """Where the numbers come from: CPU, cores, GPU (if any) and library versions."""
    import numpy
    import torch

    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for name in ("diffusers", "transformers", "onnxruntime"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def run_times(function: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall time in seconds of each of ``repeats`` runs of ``function``, after ``warmup`` runs."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def time_runs(function: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
    """Median, min and max wall time in seconds over ``repeats`` runs after ``warmup`` runs."""
    times = run_times(function, repeats, warmup)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def write_results(name: str, rows: list[dict], settings: dict, summary: dict | None = None) -> Path:
    """``benchmarks/results/<name>.json``: machine, settings, rows and (if given) the headline
    figures of the run under ``summary`` (readable without parsing rows)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {"benchmark": name, "machine": machine(), "settings": settings, "rows": rows}
    if summary is not None:
        result["summary"] = summary
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def machine_line(result: dict) -> str:
    """Where and with what a results file was measured, as one sentence above its table."""
    m = result["machine"]
    return (f"Measured {m['date']} on {m['cpu_count']} CPU cores ({m['processor']}), "
            + ("GPU " + m["gpu"] if m.get("gpu") else "no GPU")
            + f"; torch {m['torch']}, onnxruntime {m.get('onnxruntime')}, diffusers {m.get('diffusers')}.")


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns``: (key, header) pairs; floats shown with 4 significant digits."""
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated (numpy's default)."""
    import numpy

    return float(numpy.percentile(values, q * 100))


def timing_summary(times: list[float]) -> dict:
    """Median, min, max, p90 and p99 of ``times`` (seconds)."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "p90_s": percentile(times, 0.9), "p99_s": percentile(times, 0.99), "repeats": len(times)}


def concurrent_calls(call: Callable[[int], object], concurrency: int, requests: int) -> tuple[float, list[float], list]:
    """``requests`` calls ``call(i)`` from ``concurrency`` threads -> (wall seconds, each call's
    latency in seconds, each call's result), in call order."""
    from concurrent.futures import ThreadPoolExecutor

    def timed(i: int):
        start = time.perf_counter()
        result = call(i)
        return time.perf_counter() - start, result

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(timed, range(requests)))
    return time.perf_counter() - started, [latency for latency, _ in done], [result for _, result in done]


def warm_instances(call: Callable[[int], object], instances: int = PIPELINE_INSTANCES) -> None:
    """Warm up every ``rfad_pipeline`` instance before timing: ``instances`` requests at once,
    twice, so each instance serves one. An instance's first request pays for the stub's lazy
    imports; warmed by one request, the timed ones could meet cold instances (2026-12-02, tiny
    shape: served min 0.56 s, median 2.34 s over 5 repeats, where perf_analyzer's p50 for the
    same request on a server it had loaded longer was 0.35 s)."""
    for _ in range(2):
        concurrent_calls(call, instances, instances)


def served_repo(shape: BenchShape, onnx: Path, name: str, **options) -> Path:
    """A Triton repository of ``shape``'s export (python backend) under the cache, written afresh."""
    from rfad.export.api import write_triton_repo

    return write_triton_repo(onnx, CACHE / shape.name / "repos" / name, canvas_size=shape.size, **options)
