"""``rfad demo``: every stage once, end to end, on a fresh machine.

models -> ONNX with parity -> Triton repository -> the local Triton server -> real gRPC requests
-> images and a report. Orchestration only; each stage is the same library call its own command
makes, and the report is :mod:`rfad.app.demo_report`'s.

Which models:

- by default the miniature world (:func:`rfad.miniworld.world_dir`): the shipped generator, which
  paints 128 px ad scenes around a product, and the RFNet trained on RF-mini. The products are
  drawn fresh (a seed neither the generator's training scenes nor RF-mini used), so the judge
  sees them for the first time, and every image also gets the oracle's verdict, the miniature
  world's ground truth;
- ``tiny=True``: the tiny random-weight zoo (noise images, meaningless verdicts; the fastest run,
  for the tests);
- ``models``: a model set of your own.

Each product gets one request to the served loop (one candidate per attempt, up to
``max_attempts``), then every attempt it used is asked for again alone (``max_attempts`` 1, that
attempt's seed): the images the loop judged and discarded, shown beside the one it returned.
With early screening on (``screen_at``, ``screen_threshold``), the candidates it replaced mid-loop
are listed in draw order beside them, each with the step and p(Available) it was screened at.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rfad.contract import DEFAULTS

WORLD_PRODUCTS = 4
# The demo's products: seed 5 of RF-mini's request stream (RF-mini itself is seed 0), so none of
# them was in the judge's training data.
WORLD_PRODUCT_SEED = 5
WORLD_AVAILABLE_SHARE = 0.4  # the scene mix the prompts are drawn from, as RF-mini's
FALLBACK_SIZE = 256  # the canvas of a model set that declares none
# A demo request: enough steps for the miniature world's generator to paint a scene, and enough
# attempts to show the loop discarding candidates (the command's defaults; `rfad demo --steps`).
DEMO_STEPS = 20
DEMO_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class DemoProduct:
    name: str
    path: Path  # the cut-out PNG sent to the server
    prompt: str
    caption: str
    canvas: object = None  # rfad.canvas.AdCanvas as the server places it (world products: the oracle reads it)


def _world_products(folder: Path, n: int) -> list[DemoProduct]:
    from rfad.trainer.api import product_requests

    folder.mkdir(parents=True, exist_ok=True)
    products = []
    for i, scene in enumerate(product_requests(n, WORLD_PRODUCT_SEED, WORLD_AVAILABLE_SHARE)):
        path = folder / f"product-{i}.png"
        scene.product.save(path)
        products.append(DemoProduct(f"product-{i}", path, scene.prompt, scene.caption, scene.canvas))
    return products


def _sample_products(folder: Path) -> list[DemoProduct]:
    from rfad.tiny.products import SAMPLE_PRODUCTS, write_sample_products

    return [DemoProduct(kind, path, f"{SAMPLE_PRODUCTS[kind]} on a marble table, studio light", SAMPLE_PRODUCTS[kind])
            for kind, path in write_sample_products(folder).items()]


def _oracle(product: DemoProduct, png: bytes) -> dict | None:
    """The oracle's verdict on one returned image (world products only)."""
    if product.canvas is None:
        return None
    import io

    import numpy as np
    from PIL import Image

    from rfad.miniworld.oracle import label_ad

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    verdict = label_ad(image, np.asarray(product.canvas.product_rgba), product.canvas.product_alpha)
    return {"label": verdict.label, "fired": list(verdict.fired)}


@dataclass(frozen=True)
class DemoScreening:
    """Early screening for the demo's requests: ``screen_at`` and ``screen_threshold`` (rfad.contract)."""

    screen_at: float
    screen_threshold: float

    def refills(self, steps: int) -> int:
        """How often one slot may be refilled per attempt (rfad.contract.screening_replacements)."""
        from rfad.contract import as_float32, screening_replacements

        return screening_replacements(as_float32(self.screen_at), steps)


def _ask(client, product: DemoProduct, seed: int, steps: int, max_attempts: int, threshold: float,
         screening: DemoScreening | None = None):
    screen = {} if screening is None else {"screen_at": screening.screen_at,
                                           "screen_threshold": screening.screen_threshold}
    return client.generate(product.path, prompt=product.prompt, caption=product.caption, seed=seed, steps=steps,
                           candidates=1, num_images=1, max_attempts=max_attempts, threshold=threshold, **screen)


def _one_product(client, product: DemoProduct, seed: int, steps: int, max_attempts: int, threshold: float,
                 images: Path, screening: DemoScreening | None = None) -> dict:
    """The loop's answer for ``product`` and every attempt it made, each image saved and judged, and
    the candidates early screening replaced."""
    result = _ask(client, product, seed, steps, max_attempts, threshold, screening)
    screened = {entry["seed"]: entry for entry in result.screened}
    attempts, screened_out, refills = [], [], 0
    # One candidate per attempt: the request drew seed, seed + 1, ... in order (rfad.pipeline.screening),
    # a slot's screened-out candidates just before the one that finished.
    for drawn in range(seed, seed + result.attempts + len(screened)):
        if drawn in screened:
            screened_out.append({**screened[drawn], "attempt": len(attempts) + 1})
            refills += 1
            continue
        k = len(attempts)
        # The finished candidate alone (one attempt, no screening) is the image the loop judged.
        alone = result if result.attempts == 1 and not screened else _ask(client, product, drawn, steps, 1, threshold)
        path = images / f"{product.name}-attempt-{k + 1}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(alone.images[0])
        attempts.append({"attempt": k + 1, "seed": alone.seeds[0], "image": str(path),
                         "available": alone.available[0], "probabilities": alone.verdicts()[0],
                         "oracle": _oracle(product, alone.images[0]),
                         "screening": None if screening is None else (
                             "not screened" if refills == screening.refills(steps) else "passed")})
        refills = 0
    returned = next((a["attempt"] for a in attempts if a["seed"] == result.seeds[0]), None)
    return {"product": product.name, "prompt": product.prompt, "caption": product.caption,
            "product_image": str(product.path), "attempts": result.attempts, "returned_attempt": returned,
            "available": result.available[0], "seed": result.seeds[0], "probabilities": result.verdicts()[0],
            "oracle": _oracle(product, result.images[0]), "latency_s": round(result.latency_s, 3),
            "attempt_images": attempts, "screened": screened_out}


TINY_WITH_MODELS = "--tiny builds its own random-weight models: drop --models, or drop --tiny"


def run_demo(out: Path, models: Path | None = None, tiny: bool = False, size: int | None = None,
             steps: int = DEMO_STEPS, max_attempts: int = DEMO_MAX_ATTEMPTS, threshold: float = DEFAULTS.threshold,
             echo=print, screening: DemoScreening | None = None) -> dict:
    from rfad.client import RfadClient
    from rfad.app.demo_report import write_report
    from rfad.export.api import export_onnx, write_triton_repo
    from rfad.miniworld import training_record, world_dir
    from rfad.models.model_set import ModelSet
    from rfad.serving.launcher import TritonServer
    from rfad.tiny.zoo import build_tiny_zoo

    if tiny and models is not None:
        raise ValueError(TINY_WITH_MODELS)
    if screening is not None:  # refused before anything is built, with the served contract's words
        from rfad.contract import check_screening

        check_screening(screening.screen_at, screening.screen_threshold, steps)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    world = not tiny and models is None
    if tiny:
        echo("1/5 building the tiny model zoo (RANDOM weights: images will be noise, verdicts meaningless)")
        model_set = build_tiny_zoo(out / "zoo")
        products = _sample_products(out / "products")
    else:
        folder = world_dir() if world else Path(models)
        echo(f"1/5 using the models in {folder}" + (" (the miniature world: generator + RF-mini judge)" if world else ""))
        model_set = ModelSet.resolve(folder)
        products = _world_products(out / "products", WORLD_PRODUCTS) if world else _sample_products(out / "products")
    timings["models_s"] = time.perf_counter() - start
    if size is None and model_set.canvas is None:
        size = FALLBACK_SIZE

    echo("2/5 exporting what the repository serves to ONNX (with parity checks against PyTorch)")
    t0 = time.perf_counter()
    export_onnx(model_set, out / "onnx", echo=lambda line: echo("    " + line), served="merged")
    timings["export_s"] = time.perf_counter() - t0

    echo("3/5 writing the Triton model repository (python backend, merged ControlNet+UNet)")
    write_triton_repo(out / "onnx", out / "repo", backend="python", canvas_size=size)
    size = json.loads((out / "repo" / "deployment.json").read_text())["settings"]["pipeline"]["canvas_size"]

    echo("4/5 starting Triton (127.0.0.1, free ports)")
    t0 = time.perf_counter()
    requests = []
    with TritonServer(out / "repo", grpc_port=0, http_port=0, metrics_port=0, log_file=out / "server.log") as server:
        timings["server_start_s"] = time.perf_counter() - t0
        echo(f"    ready in {timings['server_start_s']:.1f} s at {server.grpc_url}")
        client = RfadClient(server.grpc_url)
        echo(f"5/5 sending {len(products)} gRPC requests ({steps} steps, up to {max_attempts} attempts, {size} px), "
             "then each attempt again alone, for the report")
        for i, product in enumerate(products):
            request = _one_product(client, product, i * 100, steps, max_attempts, threshold, out / "images",
                                   screening)
            requests.append(request)
            oracle = f"  oracle: {request['oracle']['label']}" if request["oracle"] else ""
            screened = f"  screened out {len(request['screened'])}" if screening is not None else ""
            echo(f"    {product.name:<10} attempts {request['attempts']}  available {request['available']}  "
                 f"p(Available) {request['probabilities']['Available']:.3f}{oracle}{screened}  "
                 f"{request['latency_s']:.2f} s")
    report = {"random_weights": tiny, "world": world, "models": str(out / "zoo") if tiny else str(folder),
              "judge_test_split": training_record(folder)["test_split"] if world else None,
              "size": size, "steps": steps, "max_attempts": max_attempts, "threshold": threshold,
              "screen_at": None if screening is None else screening.screen_at,
              "screen_threshold": None if screening is None else screening.screen_threshold,
              "timings_s": {k: round(v, 2) for k, v in timings.items()}, "requests": requests}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_report(report, out / "report.md")
    echo(f"report: {out / 'report.md'}, images: {out / 'images'}")
    echo(f"next: `rfad-serve --repo {out / 'repo'}` serves this repository; the README's tour runs each stage by hand")
    return report
