"""Shared benchmark plumbing: machine facts, timing, JSON results and Markdown tables.

Every benchmark writes ``benchmarks/results/<name>.json`` with the machine and versions it ran
on; tables in the README are rendered from those files, never typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


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


def time_runs(function: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
    """Median, min and max wall time in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def write_results(name: str, rows: list[dict], settings: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "settings": settings, "rows": rows},
                               indent=2) + "\n")
    return path


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns``: (key, header) pairs; floats shown with 4 significant digits."""
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)
