"""Which operations lose a graph's fp16 parity: the graph converted whole vs with op types kept in float32.

    python -m benchmarks.studies.sd15.fp16_ops --onnx DIR [--component controlnet] [--variants "|InstanceNormalization|..."]

``DIR`` is an fp32 ``rfad-export onnx`` folder (e.g. the SD-1.5 twin's). Each variant converts the
component's graph as ``rfad-export onnx --fp16`` does (``export.graph_files.convert_to_fp16``),
with the listed op types left in float32, and runs the export's two parity cases (its shapes and
seeded inputs, ``rfad.components.samples``) against the fp32 graph in onnxruntime. A row per variant and
output: the max abs difference and its ratio to the fp16 parity tolerance (> 1 fails the export's
check). Writes benchmarks/results/fp16_ops.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import markdown_table, write_results

# "" = the whole graph in float16, as rfad-export onnx --fp16 writes it today.
VARIANTS = ("", "InstanceNormalization,LayerNormalization", "Softmax",
            "InstanceNormalization,LayerNormalization,Softmax", "MatMul,Gemm", "Conv")


def run_variant(onnx_dir: Path, component: str, keep: tuple[str, ...], work: Path) -> list[dict]:
    import numpy as np

    from rfad.components.manifest import ExportManifest
    from rfad.components.samples import check_side, pixel_multiple, sample_inputs
    from rfad.export.api import PARITY_TOLERANCE, convert_to_fp16, open_graph, write_graph
    from rfad.onnx_session import open_session

    manifest = ExportManifest.read(onnx_dir / "manifest.json", f"--onnx {onnx_dir}")
    spec, facts = manifest.specs[component], manifest.facts
    source = onnx_dir / component / "model.onnx"
    model, sources = open_graph(source)
    target = work / "-".join(keep or ("whole",)) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_graph(convert_to_fp16(model, keep), sources, target, external=True)
    reference, converted = open_session(source, "fp32"), open_session(target, "fp16")
    side = check_side(facts)
    rows = []
    for case, (batch, height, width) in enumerate([(3, side, side), (1, side, side + pixel_multiple(facts))]):
        feed = sample_inputs(spec, batch, height, width, seed=case + 1)
        start = time.perf_counter()
        got = converted.run(spec.output_names, feed)
        seconds = time.perf_counter() - start
        for name, ref, out in zip(spec.output_names, reference.run(spec.output_names, feed), got, strict=True):
            tolerance = PARITY_TOLERANCE["fp16"] * max(1.0, float(np.abs(ref).max()))
            diff = float(np.abs(out.astype(np.float32) - ref).max())
            rows.append({"component": component, "kept_fp32": ",".join(keep) or "-", "case": case,
                         "output": name, "shape": list(ref.shape), "max_abs_diff": diff,
                         "over_tolerance": diff / tolerance, "seconds": seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="an fp32 rfad-export onnx folder")
    parser.add_argument("--component", default="controlnet")
    parser.add_argument("--variants", default="|".join(VARIANTS),
                        help="|-separated; each a comma-separated list of op types kept in float32 ('' = none)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.onnx.parent) as work:
        for variant in args.variants.split("|"):
            keep = tuple(op for op in variant.split(",") if op)
            found = run_variant(args.onnx, args.component, keep, Path(work))
            worst = max(found, key=lambda r: r["over_tolerance"])
            print(f"kept in fp32: {','.join(keep) or '-':<50} worst {worst['output']} "
                  f"{worst['over_tolerance']:.2f}x the tolerance", flush=True)
            rows += found
    path = write_results("fp16_ops", rows, {"onnx": str(args.onnx), "component": args.component})
    summary = {}
    for row in rows:
        summary.setdefault(row["kept_fp32"], []).append(row["over_tolerance"])
    print(markdown_table([{"kept_fp32": k, "worst": max(v), "failing": sum(x > 1 for x in v), "outputs": len(v)}
                          for k, v in summary.items()],
                         [("kept_fp32", "op types kept in float32"), ("worst", "worst / tolerance"),
                          ("failing", "outputs over"), ("outputs", "outputs")]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
