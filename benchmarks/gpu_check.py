"""rfad on one GPU: generation (beside diffusers), the judge, an RFFT step and RFNet training, at SD-1.5 sizes.

    bash benchmarks/gpu_check.sh [--results-dir DIR] [--skip PART,...] [--deadline-s S] [--compile-mode MODE]
    python benchmarks/gpu_check.py [same flags] [--tiny] [--work DIR] [--zoo DIR] [--dtype fp16|bf16|fp32]
    python benchmarks/gpu_check.py --estimate          # the run's duration from operation counts, no GPU
    make gpu-check

One command, one JSON: ``<results-dir>/gpu_<device>.json`` (``benchmarks/results`` by default;
``<device>`` is the GPU's name, or ``cpu``; ``-tiny`` added with ``--tiny``), rewritten after every
part, so a run stopped half-way keeps what it measured. Parts, in run order (``--skip`` any):

- ``twin``: builds the SD-1.5 random-weight twin (``rfad tiny --shape sd15``: 8.5 GB on disk)
  into ``--work`` unless one is there (or ``--zoo`` names one);
- ``generation``: the torch runner in fp16, 512 px, 40 DDIM steps, CFG 7.5, ControlNet, K = 1 and
  4 candidates: seconds per attempt, iterations per second, the denoising step's own rate, beside
  diffusers' StableDiffusionControlNetInpaintPipeline on the same modules and settings (the ratio);
- ``judge``: the loop's judge (depth + saliency + RFNet) at batch 1 and 16;
- ``rfft``: one optimiser step at the paper's local batch 4 x accumulation 4, bf16 autocast,
  gradient checkpointing: seconds, peak memory, whether it fits the card;
- ``rfnet``: RFNet training (ResNet-50, RoBERTa-base, 384 px, bf16): samples per second, memory;
- ``compile``: the torch runner with ``torch.compile`` (``--compile-mode``, default
  reduce-overhead: CUDA graphs) at K = 1, compilation time and the compiled attempt.

Each part is timed with CUDA events after warm-up on a GPU (wall time on the CPU) and records its
peak memory (``torch.cuda.max_memory_allocated`` on a GPU, peak RSS on the CPU). A part that
fails is recorded with its error and the run goes on; the exit status is then 1. ``--deadline-s``
skips a part (recorded as such) when the estimate says it would end past the deadline.

``--tiny`` runs the same parts on the tiny zoo at toy sizes (the test suite runs it on the CPU, so
the script cannot rot); its numbers mean nothing. ``docs/render.py`` renders the GPU section (``benchmarks/gpu/report.py``)
of docs/performance.md from every ``gpu_*.json`` of the SD-1.5 shape in benchmarks/results.

On a machine with torch (CUDA), transformers, accelerate, safetensors, tokenizers, numpy, pillow,
opencv-python-headless, click, psutil, tqdm and setuptools but without diffusers (the project's
H100 machine), carry these wheels (cp312, manylinux x86_64; 6.4 MB together) in ``.whl/``:

    diffusers==0.42.1            (pure Python; needs importlib_metadata, which that machine lacks)
    importlib_metadata==8.7.0    (pure Python; needs zipp, present there)

downloaded here with:

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl diffusers==0.42.1 importlib_metadata==8.7.0

``benchmarks/gpu_check.sh`` installs them (``pip install --no-index --no-deps --target .site
.whl/*.whl``), installs rfad itself there (its folders map to one import root), puts ``.site``
first on PYTHONPATH and runs this script. Expected duration on one H100, twin included: see
``--estimate`` and docs/performance.md's GPU section (about 6.5 minutes with the compile part, 3.4
without it; ``--deadline-s 480`` keeps it under 8).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
from common import CACHE, RESULTS, machine  # noqa: E402
from plan import FULL, PART_HELP, PARTS, TINY  # noqa: E402

ESTIMATE_NAME = "gpu_estimate"
DTYPES = ("fp16", "bf16", "fp32")


def device_slug(device) -> str:
    """``cpu``, or the GPU's name in lower case with runs of other characters as '-'."""
    import torch

    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def _parts(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny zoo at toy sizes (CPU test; numbers mean nothing)")
    parser.add_argument("--skip", type=_parts, default=[], help="comma-separated parts to skip: " + ", ".join(
        f"{name} ({PART_HELP[name]})" for name in PARTS))
    parser.add_argument("--work", type=Path, default=CACHE / "gpu_check", help="where the twin and RFFT data go")
    parser.add_argument("--zoo", type=Path, help="an existing zoo of the plan's shape (skips building one)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where gpu_<device>.json is written")
    parser.add_argument("--dtype", choices=DTYPES, help="generation and judge precision (default: fp16 on a GPU, "
                                                        "fp32 on the CPU, where half precision is very slow)")
    parser.add_argument("--train-precision", choices=("bf16", "no"),
                        help="RFFT and RFNet autocast (default: bf16 on a GPU; no on the CPU, where bf16 autocast "
                             "is about 30x slower than float32)")
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        help="torch.compile mode of the compile part (default, reduce-overhead, max-autotune)")
    parser.add_argument("--deadline-s", type=float, help="skip a part that the estimate says would end after this")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 on a shared machine)")
    parser.add_argument("--estimate", action="store_true",
                        help=f"write {ESTIMATE_NAME}.json (the run's duration from operation counts) and stop")
    return parser.parse_args(argv)


class Run:
    """The result file of one run, rewritten after each part."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.result = {"benchmark": "gpu_check", "machine": machine(), "settings": settings, "parts": {}, "rows": []}
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(self.result, indent=2) + "\n")
        partial.replace(self.path)

    def record(self, part: str, status: dict, rows: list[dict] = ()) -> None:
        self.result["parts"][part] = status
        self.result["rows"] += list(rows)
        self.write()


def _twin(args, plan, meter) -> tuple[list[dict], Path]:
    from rfad.tiny.shapes import SHAPES
    from rfad.tiny.zoo import build_tiny_zoo, zoo_disk_need

    zoo = args.work / f"zoo-{plan.shape}"
    if (zoo / "parameters.json").is_file() and json.loads((zoo / "parameters.json").read_text())["shape"] == plan.shape:
        return [{"part": "twin", "shape": plan.shape, "reused": str(zoo)}], zoo
    needed, free = zoo_disk_need(SHAPES[plan.shape], args.work)
    if free < needed:
        raise RuntimeError(f"--work {args.work}: the {plan.shape} zoo needs {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
    started = time.perf_counter()
    build_tiny_zoo(zoo, seed=0, shape=SHAPES[plan.shape])
    size = sum(f.stat().st_size for f in zoo.rglob("*") if f.is_file())
    return [{"part": "twin", "shape": plan.shape, "build_s": time.perf_counter() - started, "bytes": size}], zoo


def _free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_check(args) -> int:
    import torch

    from measure import Meter

    plan = TINY if args.tiny else FULL
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.tiny:
        # The SD-1.5 plan on two CPU cores would take hours and RFFT's step needs more than 24 GB.
        raise SystemExit("gpu_check: the SD-1.5 plan needs a CUDA GPU (torch.cuda.is_available() is False); "
                         "on the CPU run --tiny")
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    train_precision = args.train_precision or ("bf16" if device.type == "cuda" else "no")
    meter = Meter(device)
    estimate_path = args.results_dir / f"{ESTIMATE_NAME}{'-tiny' if args.tiny else ''}.json"
    estimate = json.loads(estimate_path.read_text()) if estimate_path.is_file() else None
    settings = {"plan": plan.to_dict(), "device": str(device), "dtype": dtype_name,
                "train_precision": train_precision, "clock": meter.clock,
                "memory": meter.memory_kind, "compile_mode": args.compile_mode, "skip": args.skip, "work": str(args.work),
                "deadline_s": args.deadline_s, "estimate_file": estimate_path.name if estimate else None}
    run = Run(args.results_dir / f"gpu_{device_slug(device)}{'-tiny' if args.tiny else ''}.json", settings)
    print(f"gpu_check: {plan.shape} plan on {device} (generation {dtype_name}, training {train_precision}); "
          f"writing {run.path}", flush=True)
    started, failures, zoo, served = time.perf_counter(), 0, args.zoo, None

    def served_runner(compile_mode=None):
        from serving_parts import load_served

        return load_served(zoo, device, dtype, compile_mode)

    for part in PARTS:
        elapsed = time.perf_counter() - started
        expected = estimate["parts"][part]["seconds"] if estimate else 0.0
        if part in args.skip or (part == "twin" and args.zoo is not None):
            run.record(part, {"status": "skipped", "reason": "--skip" if part in args.skip else "--zoo given"})
            continue
        if args.deadline_s is not None and elapsed + expected > args.deadline_s:
            run.record(part, {"status": "skipped", "reason": f"deadline: {elapsed:.0f} s elapsed + {expected:.0f} s "
                                                           f"estimated > {args.deadline_s:.0f} s"})
            continue
        print(f"[{elapsed:6.1f} s] {part}: {PART_HELP[part]}", flush=True)
        part_start = time.perf_counter()
        try:
            if part != "twin" and zoo is None:
                raise RuntimeError("no zoo: the twin part was skipped and no --zoo was given")
            if part == "twin":
                rows, zoo = _twin(args, plan, meter)
            elif part in ("generation", "judge"):
                from serving_parts import bench_generation, bench_judge

                served = served or served_runner()
                rows = bench_generation(served, plan, meter) if part == "generation" else bench_judge(served, plan, meter)
            else:
                served = None  # the served models leave the device before training loads its own
                _free(device)
                if part == "rfft":
                    from training_parts import bench_rfft

                    rows = bench_rfft(zoo, plan, meter, device, args.work, train_precision)
                elif part == "rfnet":
                    from training_parts import bench_rfnet

                    rows = bench_rfnet(zoo, plan, meter, device, train_precision)
                else:
                    from serving_parts import bench_generation

                    load_start = time.perf_counter()
                    compiled = served_runner(args.compile_mode)
                    load_s = time.perf_counter() - load_start
                    rows = bench_generation(compiled, plan, meter, plan.compile_candidates,
                                            f"rfad torch runner, torch.compile {args.compile_mode}", with_diffusers=False)
                    for row in rows:
                        row.update(part="compile", load_s=load_s)
                    del compiled
            status = {"status": "ok"}
        except Exception as exc:  # recorded, and the run goes on: one broken part must not lose the others
            failures += 1
            rows, status = [], {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=8)}
            print(f"  {part} failed: {status['error']}", flush=True)
        status.update(seconds=time.perf_counter() - part_start, estimated_s=expected if estimate else None)
        run.record(part, status, rows)
        _free(device)
    run.result["total_s"] = time.perf_counter() - started
    run.write()
    print(f"gpu_check: {time.perf_counter() - started:.1f} s, {failures} part(s) failed; {run.path}", flush=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from rfad.logs import quiet_third_party

    quiet_third_party()
    if args.estimate:
        from budget import estimate

        result = estimate(TINY if args.tiny else FULL)
        path = args.results_dir / f"{ESTIMATE_NAME}{'-tiny' if args.tiny else ''}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"estimated {result['total_s']:.0f} s: " + ", ".join(f"{k} {v['seconds']:.0f} s"
                                                                  for k, v in result["parts"].items()) + f"; {path}")
        return 0
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
