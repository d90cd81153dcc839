"""docs/performance.md's GPU section, from benchmarks/results/gpu_*.json (benchmarks/gpu_check.py).

Only runs of the SD-1.5 plan are figures; ``--tiny`` runs keep the script alive and are not
rendered. With no such run the section says so plainly, beside the prepared command and the
duration estimated from operation counts (``gpu_estimate.json``, ``gpu_check.py --estimate``).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import markdown_table

GiB = 2**30
# Published SD-1.5 anchors at 512 px (DESIGN.md section 8 and issue 31): stable-fast's ControlNet
# on an H100 (compiled), TensorRT's SD-1.5 on an H100 PCIe without ControlNet (0.75 s per 50 steps).
ANCHORS = [("stable-fast, SD-1.5 + ControlNet, H100 (compiled)", 72.6),
           ("TensorRT, SD-1.5 without ControlNet, H100 PCIe (0.75 s / 50 steps)", 50 / 0.75)]
COMMAND = "bash benchmarks/gpu_check.sh --deadline-s 480    # or: make gpu-check GPU_ARGS='--deadline-s 480'"


def gpu_results(results: Path) -> list[dict]:
    """Every gpu_<device>.json of the SD-1.5 plan under ``results``, by file name."""
    found = []
    for path in sorted(results.glob("gpu_*.json")):
        result = json.loads(path.read_text())
        if result.get("benchmark") == "gpu_check" and result["settings"]["plan"]["shape"] == "sd15":
            found.append({**result, "file": path.name})
    return found


def _gib(value) -> float | str:
    return value / GiB if isinstance(value, (int, float)) else ""


def _estimate_lines(estimate: dict | None) -> list[str]:
    if estimate is None:
        return ["No estimate: run `python benchmarks/gpu_check.py --estimate`.", ""]
    a = estimate["assumptions"]
    rows = [{"part": name, "tflop": part["flops"] / 1e12, "compute_s": part["compute_s"], "other_s": part["other_s"],
             "seconds": part["seconds"]} for name, part in estimate["parts"].items()]
    return [f"Expected duration on one H100, twin included: **{estimate['total_s'] / 60:.1f} minutes** "
            f"({estimate['total_s']:.0f} s, start-up {estimate['startup_s']:.0f} s included), estimated by "
            "`gpu_check.py --estimate` from operation counts (the architectures on the meta device under "
            "`torch.utils.flop_counter`). Compute runs at the rate the stable-fast anchor implies "
            f"({a['anchor_it_s']} it/s x {estimate['operations_flops']['cfg_step_per_candidate'] / 1e12:.2f} TFLOP "
            f"per CFG evaluation = {a['compiled_flop_per_s'] / 1e12:.0f} TFLOP/s compiled), eager PyTorch ASSUMED at "
            f"{a['eager_fraction']:.2f} of it; the twin's build is the {a['twin_build_s_measured_on_cpu']:.0f} s "
            "measured on this project's CPU machine; loading at "
            f"{a['load_bytes_per_s'] / 1e9:g} GB/s and {a['compile_s_per_module_shape']:.0f} s per compiled module "
            "and batch shape are ASSUMED. `gpu_check.py --deadline-s 480` skips a part (recorded) that would end past "
            "8 minutes.",
            "", markdown_table(rows, [("part", "part"), ("tflop", "TFLOP"), ("compute_s", "compute s"),
                                      ("other_s", "build / load / compile s"), ("seconds", "estimated s")]), ""]


def _run_lines(result: dict) -> list[str]:
    m, s = result["machine"], result["settings"]
    rows = result["rows"]
    lines = [f"### {m.get('gpu') or 'CPU'} (`{result['file']}`)", "",
             f"Measured {m['date']}; torch {m['torch']}, diffusers {m.get('diffusers')}, transformers "
             f"{m.get('transformers')}; generation and judge in {s['dtype']}, training {s['train_precision']}; "
             f"time by {s['clock']} after warm-up, memory as {s['memory']}.", ""]
    # An error can span lines and hold pipes: one table cell, at most 300 characters.
    statuses = [{"part": name, **{k: " ".join(v.split()).replace("|", "\\|")[:300] if isinstance(v, str) else v
                                  for k, v in status.items() if v is not None and k != "traceback"}}
                for name, status in result["parts"].items()]
    lines += [markdown_table(statuses,
                             [("part", "part"), ("status", "status"), ("seconds", "seconds"),
                              ("estimated_s", "estimated s"), ("reason", "skipped because"), ("error", "error")]), ""]
    generation = [r for r in rows if r["part"] in ("generation", "compile")]
    if generation:
        lines += ["Generation, one attempt (512 px, 40 DDIM steps, CFG 7.5, ControlNet):", "",
                  markdown_table([{**r, "peak_gib": _gib(r.get("peak_bytes"))} for r in generation],
                                 [("backend", "backend"), ("candidates", "K"), ("attempt_s", "s / attempt"),
                                  ("attempt_it_s", "it/s (attempt)"), ("step_it_s", "it/s (step alone)"),
                                  ("x_diffusers", "x diffusers"), ("first_attempt_s", "first attempt s"),
                                  ("peak_gib", "peak GiB")]), "",
                  "Anchors (it/s at 512 px, not measured here): "
                  + "; ".join(f"{name} {value:.1f}" for name, value in ANCHORS) + ".", ""]
    judge = [r for r in rows if r["part"] == "judge"]
    if judge:
        lines += ["Judge (depth + saliency + RFNet through the loop's `RunnerJudge`):", "",
                  markdown_table([{**r, "peak_gib": _gib(r.get("peak_bytes"))} for r in judge],
                                 [("batch", "batch"), ("latency_s", "latency s"), ("per_image_s", "s / image"),
                                  ("peak_gib", "peak GiB")]), ""]
    rfft = [r for r in rows if r["part"] == "rfft" and "optimizer_step_s" in r]
    if rfft:
        r = rfft[0]
        fits = {True: "yes", False: "no", None: "n/a"}[r["fits_device"]]
        lines += [f"RFFT, one optimiser step (local batch {r['local_batch']} x accumulation {r['grad_accum']}, "
                  f"{r['size']} px, {r['ddim_steps']} DDIM steps, t* among the last {r['last_k']}, "
                  f"{r['mixed_precision']} autocast, gradient checkpointing): {r['optimizer_step_s']:.1f} s "
                  f"({r['micro_step_mean_s']:.1f} s per micro-step, {r['samples_per_s']:.2f} samples/s); weights "
                  f"{_gib(r['weights_bytes']):.1f} GiB, peak {_gib(r['peak_bytes']):.1f} GiB allocated, "
                  f"{_gib(r.get('peak_reserved_bytes')) or 0:.1f} GiB reserved, of "
                  f"{_gib(r['device_total_bytes']) or 0:.1f} GiB: the paper's setting fits one card: {fits}.", ""]
    rfnet = [r for r in rows if r["part"] == "rfnet"]
    if rfnet:
        lines += ["RFNet training (ResNet-50 + RoBERTa-base, 384 px):", "",
                  markdown_table([{**r, "peak_gib": _gib(r.get("peak_bytes"))} for r in rfnet],
                                 [("batch", "batch"), ("mixed_precision", "precision"), ("step_s", "s / step"),
                                  ("samples_per_s", "samples / s"), ("peak_gib", "peak GiB")]), ""]
    return lines


def gpu_section(results: Path) -> list[str]:
    """The section's lines: the prepared run, its estimate, then every recorded GPU run (or that none is)."""
    estimate_path = results / "gpu_estimate.json"
    estimate = json.loads(estimate_path.read_text()) if estimate_path.is_file() else None
    runs = gpu_results(results)
    lines = ["## On a GPU: the SD-1.5 twin (`benchmarks/gpu_check.py`)", ""]
    if not runs:
        lines += ["**Not run on a GPU yet.** No `benchmarks/results/gpu_*.json` of the SD-1.5 plan exists: every "
                  "figure on this page comes from CPUs. The run is prepared, and `python benchmarks/gpu_check.py --tiny` "
                  "runs the same code on the tiny zoo in the test suite on the CPU (`tests/test_gpu_check.py`).", ""]
    lines += ["On a machine with CUDA torch, transformers and accelerate (the wheels it lacks carried in `.whl/`, as "
              "`benchmarks/gpu_check.py`'s docstring lists them), one command builds the twin and runs every part:",
              "", "```bash", COMMAND, "```", ""]
    lines += _estimate_lines(estimate)
    for result in runs:
        lines += _run_lines(result)
    return lines
