"""Write ``--input-data`` files for Triton's perf_analyzer: requests to rfad_pipeline and rfad_judge.

    python -m benchmarks.suite.perf_analyzer_input [--steps 20] [--out benchmarks/results]

Each file holds one request per sample product (drawn in code, as the demo's): BYTES inputs
(images, texts) as base64 of Triton's raw BYTES serialisation with their shape
(``{"b64": ..., "shape": [n]}``, the form perf_analyzer's data loader reads), numbers as
one-element lists, names from the contract. ``perf_analyzer_bench.py`` (run by the suite) runs
perf_analyzer with requests built by the same functions; tests/test_benchmarks.py decodes the
files back. Measure a running server with Triton's own tool (``perf_analyzer_tool.py`` says
where it comes from: the tritonclient 2.51 wheel; or the NGC SDK container), e.g.

    perf_analyzer -m rfad_pipeline -u 127.0.0.1:8001 -i grpc \\
        --input-data benchmarks/results/perf_analyzer_rfad_pipeline.json \\
        --concurrency-range 1:4 --measurement-interval 20000
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path

from benchmarks.common import RESULTS


def _bytes_tensor(items: list[bytes]) -> dict:
    """A BYTES tensor as perf_analyzer's ``b64`` form: base64 of the raw tensor, which for BYTES is
    Triton's serialisation (each element a 4-byte little-endian length, then its bytes), plus
    its shape (the contract's inputs have variable or one-element dims)."""
    import numpy as np
    from tritonclient.utils import serialize_byte_tensor

    raw = serialize_byte_tensor(np.array(items, dtype=np.object_)).item()  # a 0-d object array holding the bytes
    return {"b64": base64.b64encode(raw).decode("ascii"), "shape": [len(items)]}


def png(image) -> bytes:
    """``image`` (PIL) as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pipeline_request(product: bytes, prompt: str, caption: str, **numbers) -> dict:
    """One rfad_pipeline request: encoded product, texts, and numeric inputs by contract name (seed=0, ...)."""
    return {"product_image": _bytes_tensor([product]), "prompt": _bytes_tensor([prompt.encode()]),
            "caption": _bytes_tensor([caption.encode()]), **{name: [value] for name, value in numbers.items()}}


def pipeline_requests(steps: int) -> list[dict]:
    from rfad.tiny.products import SAMPLE_PRODUCTS, draw_product

    return [pipeline_request(png(draw_product(kind)), f"{title} on a marble table, studio light", title,
                             seed=i * 100, steps=steps, max_attempts=3)
            for i, (kind, title) in enumerate(SAMPLE_PRODUCTS.items())]


def judge_request(images: list[bytes], product: bytes, caption: str) -> dict:
    """One rfad_judge request: encoded ad images, the encoded product, the caption."""
    return {"generated_image": _bytes_tensor(images), "product_image": _bytes_tensor([product]),
            "caption": _bytes_tensor([caption.encode()])}


def plain_ad(product, size: int | None = None) -> bytes:
    """PNG of ``product`` (PIL RGBA) placed on a plain canvas as the pipeline places it (default canvas size)."""
    from PIL import Image

    from rfad.canvas import CanvasSpec, prepare_canvas

    spec = CanvasSpec() if size is None else CanvasSpec(width=size, height=size)
    return png(Image.fromarray(prepare_canvas(product, spec).init_image))


def judge_requests(images: int = 4) -> list[dict]:
    from rfad.tiny.products import SAMPLE_PRODUCTS, draw_product

    return [judge_request([plain_ad(draw_product(kind))] * images, png(draw_product(kind)), title)
            for kind, title in SAMPLE_PRODUCTS.items()]


def main() -> None:
    from rfad.contract import JUDGE_INPUTS, JUDGE_MODEL, PIPELINE_INPUTS, PIPELINE_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for model, fields, requests in ((PIPELINE_MODEL, PIPELINE_INPUTS, pipeline_requests(args.steps)),
                                    (JUDGE_MODEL, JUDGE_INPUTS, judge_requests())):
        names = {f.name for f in fields}
        for request in requests:  # the contract's names only, so a renamed input fails here
            assert set(request) <= names, sorted(set(request) - names)
        path = args.out / f"perf_analyzer_{model}.json"
        path.write_text(json.dumps({"data": requests}, indent=1) + "\n")
        print(f"{len(requests)} {model} requests written to {path}")


if __name__ == "__main__":
    main()
