"""The benchmark suite (``make bench``): every benchmark of benchmarks/suite/ in turn, then
docs/performance.md and its plots.

    python -m benchmarks.suite.run_all [--quick] [--skip NAME,...]

Each script writes its own benchmarks/results/<name>.json; ``report.py`` then draws the plots and
re-renders the docs (docs/render.py) from those files. Models are built and exported
once into benchmarks/.cache and shared by the scripts. Run it on an otherwise idle machine: the
numbers are wall-clock times. The studies (benchmarks/studies/) are run on their own.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from benchmarks.common import ROOT, module_command, write_results

# (name, script, arguments, arguments with --quick): every script of the suite, in the order run.
SCRIPTS = (
    ("export", "export_bench.py", [], ["--quick"]),
    ("pipeline", "pipeline_bench.py", [], ["--quick"]),
    ("throughput", "throughput_bench.py", [], ["--quick"]),
    ("availability", "availability_bench.py", [], ["--quick"]),
    ("soak", "soak.py", ["--clients", "8", "--requests", "8"], ["--clients", "4", "--requests", "8"]),
    ("perf_analyzer", "perf_analyzer_bench.py", [], ["--quick"]),
    ("perf_analyzer input", "perf_analyzer_input.py", [], []),
    ("session_memory", "session_memory_bench.py", [], ["--runs", "20", "--repeats", "3"]),
    ("judge_prepare_memory", "judge_prepare_memory.py", [], []),
    ("rfnet", "rfnet_bench.py", [], ["--quick"]),
    ("rfft_step", "rfft_step.py", [], ["--quick"]),
)


def module_of(script: str) -> str:
    """``export_bench.py`` -> ``benchmarks.suite.export_bench``."""
    return f"benchmarks.suite.{script.removesuffix('.py')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats everywhere")
    parser.add_argument("--skip", default="", help="comma-separated names to skip: " + ", ".join(s[0] for s in SCRIPTS))
    args = parser.parse_args()
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = skip - {s[0] for s in SCRIPTS}
    if unknown:
        parser.error(f"--skip: unknown {sorted(unknown)}")
    started = time.monotonic()
    for name, script, full, quick in SCRIPTS:
        if name in skip:
            continue
        t0 = time.monotonic()
        print(f"=== {name}: {script} {' '.join(quick if args.quick else full)}", flush=True)
        subprocess.run(module_command(module_of(script), *(quick if args.quick else full)), check=True, cwd=ROOT)
        print(f"=== {name}: {time.monotonic() - t0:.0f} s", flush=True)
    seconds = time.monotonic() - started
    if not skip:  # only a whole run says how long the suite takes
        write_results("suite", [{"seconds": round(seconds, 1), "quick": args.quick}], {"scripts": [s[1] for s in SCRIPTS]})
    subprocess.run(module_command("benchmarks.suite.report"), check=True, cwd=ROOT)
    print(f"suite done in {seconds:.0f} s")


if __name__ == "__main__":
    main()
