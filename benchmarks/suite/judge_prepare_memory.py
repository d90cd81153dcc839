"""Working memory of the judge endpoint's prepare step for its largest requests.

    python -m benchmarks.suite.judge_prepare_memory

``rfad_judge_prepare`` decodes every ad image, places the product as the pipeline does (I_o, at
the ads' size) and resizes both to the judge's size (:func:`rfad.serving.judge_io.judge_tensors`).
Each case runs in a fresh process: the resident memory before, the peak during (``VmHWM``
after resetting it through ``/proc/self/clear_refs``, Linux) and after, and the wall time.
Cases: 1 and 4 ads of 4096 x 4096 px (JPEG, the soak's largest) with a 2048-px product; and,
beside them, the generation canvas of the same size (:func:`rfad.canvas.prepare_canvas`: mask,
edges and control image too), which the prepare step built for I_o before it used
:func:`rfad.canvas.place_product`, and before it read only the rows its resize touches
(:func:`rfad.canvas.ad_image_rows`, :func:`rfad.canvas.placed_rows`). Writes
benchmarks/results/judge_prepare_memory.json.
"""

from __future__ import annotations

import gc
import random
import time
from pathlib import Path

from benchmarks.common import markdown_table, write_results

SIDE, PRODUCT_SIDE, JUDGE_SIZE = 4096, 2048, 384  # judge endpoint's largest ad, the soak's largest product, RFNet's size


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def measure(case: str, images: int) -> dict:
    """One case in this (fresh) process: bytes resident before, peak added during, added after."""
    from benchmarks.suite.soak_requests import _png, ad_image

    from rfad import heap
    from rfad.canvas import CanvasSpec, prepare_canvas
    from rfad.serving.judge_io import JudgeRequest, judge_tensors
    from rfad.tiny.products import draw_product
    from rfad.tiny.tokenizers import build_roberta_tokenizer

    tokenizer = build_roberta_tokenizer()
    ad = ad_image(random.Random(0), SIDE, SIDE)
    product = _png(draw_product("box", PRODUCT_SIDE, PRODUCT_SIDE))
    # Drawing the 4096-px test ad freed large arrays that glibc may still hold resident: handed back
    # first, so that "before" is live memory only (the prepare step itself now trims, rfad/heap.py).
    gc.collect()
    heap.trim()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = time.perf_counter()
    if case == "judge_tensors":
        judge_tensors(JudgeRequest([ad] * images, product, "a box", 0.5), tokenizer, JUDGE_SIZE)
    else:
        prepare_canvas(product, CanvasSpec(width=SIDE, height=SIDE))
    seconds = time.perf_counter() - start
    return {"case": case, "ads": images, "side": SIDE, "product_side": PRODUCT_SIDE, "seconds": seconds,
            "rss_before_bytes": before, "peak_added_bytes": _status("VmHWM") - before,
            "after_added_bytes": _status("VmRSS") - before}


def main() -> None:
    from rfad.isolated import run_isolated, step_processes

    cases = [("judge_tensors", 1), ("judge_tensors", 4), ("prepare_canvas", 0)]
    rows = []
    with step_processes():
        for case, images in cases:
            result, _ = run_isolated(measure, case, images)
            rows.append({**result, "peak_added_mib": result["peak_added_bytes"] / 2**20,
                         "after_added_mib": result["after_added_bytes"] / 2**20})
            print(f"{case} ({images} ads): peak +{rows[-1]['peak_added_mib']:.0f} MiB, {result['seconds']:.2f} s", flush=True)
    path = write_results("judge_prepare_memory", rows, {"side": SIDE, "product_side": PRODUCT_SIDE,
                                                        "judge_size": JUDGE_SIZE})
    print(markdown_table(rows, [("case", "case"), ("ads", "ads"), ("peak_added_mib", "peak added, MiB"),
                                ("after_added_mib", "after, MiB"), ("seconds", "s")]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
