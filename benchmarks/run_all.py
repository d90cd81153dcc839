"""The benchmark suite: every script in turn, then docs/performance.md and its plots.

    python benchmarks/run_all.py [--quick] [--skip NAME,...]

Each script writes its own benchmarks/results/<name>.json; ``report.py`` then rewrites the
whole docs/performance.md page and the plots from those files (including the results of
``rfnet_bench.py`` and ``rfft_step.py``, the RFNet and RFFT benchmarks, which are run on their
own: ``python benchmarks/rfnet_bench.py``, ``python benchmarks/rfft_step.py``). Models are built and
exported once into benchmarks/.cache and shared by the scripts. Run it on an otherwise idle
machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (name, script, arguments, arguments with --quick)
SCRIPTS = (
    ("export", "export_bench.py", [], ["--quick"]),
    ("pipeline", "pipeline_bench.py", [], ["--quick"]),
    ("throughput", "throughput_bench.py", [], ["--quick"]),
    ("availability", "availability_bench.py", [], ["--quick"]),
    ("soak", "soak.py", ["--clients", "8", "--requests", "8"], ["--clients", "4", "--requests", "8"]),
    ("perf_analyzer input", "perf_analyzer_input.py", [], []),
)


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
        subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)], check=True)
        print(f"=== {name}: {time.monotonic() - t0:.0f} s", flush=True)
    seconds = time.monotonic() - started
    if not skip:  # only a whole run says how long the suite takes
        sys.path.insert(0, str(HERE))
        from common import write_results

        write_results("suite", [{"seconds": round(seconds, 1), "quick": args.quick}], {"scripts": [s[1] for s in SCRIPTS]})
    subprocess.run([sys.executable, str(HERE / "report.py")], check=True)
    print(f"suite done in {seconds:.0f} s")


if __name__ == "__main__":
    main()
