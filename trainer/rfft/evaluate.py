"""``rfad-train eval-rfft``: the base and the tuned ControlNet side by side, judged by RFNet.

For N products x S seeds, each ControlNet generates through the serving loop itself
(:func:`rfad.pipeline.generate.generate` with :class:`rfad.pipeline.judge.RunnerJudge`), with
Recurrent Generation up to ``max_attempts``. Per ControlNet:

- ``ava``: availability rate of ONE attempt (the first candidate of every product x seed judged
  Available, p >= threshold): the paper's "Ava" column, here judged by RFNet, not by humans;
- ``attempts_mean``: mean number of attempts to the first Available image. A run with no
  Available image within ``max_attempts`` is censored and counted as ``max_attempts + 1`` (a
  lower bound of its true count), and the censored runs are reported separately
  (``censored``), with the mean over the uncensored runs only (``attempts_mean_available``);
- ``collapse_distance``: mean pairwise pixel distance between the first-attempt images of the S
  seeds of the same product (mean |a - b| over the generated region, pixels in [0, 1]),
  averaged over products. The paper's failure mode without regularisation is "repetitive plain
  backgrounds": a tuned model whose distance falls well below the base's is collapsing
  (``collapse_ratio`` = tuned / base);
- ``cross_product_distance``: the same distance between the first images of different products over
  the background both share: a model painting one background for every request scores near 0 even
  when its seeds still differ (``cross_product_ratio`` = tuned / base);
- ``prompt_fidelity``: the share of first-attempt images showing what their prompt names (wall
  colour, table, reference object; :mod:`rfad.trainer.data.fidelity`), for miniature-world prompts
  (None for others).

Seeds do not overlap: seed j of a product starts at ``seed + j * max_attempts`` and attempt a
uses the next seed, so every image of the evaluation has its own seed. Both ControlNets see the
same seeds, canvases and prompts.

Caveat: with the judge RFFT was tuned against, ``ava`` measures what RFFT optimised; pass a
separately trained RFNet (``--rfnet``) for an independent verdict.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.pipeline.settings import GenerationSettings
from rfad.trainer.data.fidelity import read_fidelity
from rfad.trainer.data.manifest import resolve_path
from rfad.trainer.rfft.measures import cross_product_distance, fidelity_shares, seed_distance
from rfad.trainer.rfft.sampling import load_rows


def pick_products(rows, n: int):
    """The first ``n`` rows with distinct product files, in manifest order."""
    seen, picked = set(), []
    for row in rows:
        if row.product not in seen:
            seen.add(row.product)
            picked.append(row)
        if len(picked) == n:
            break
    return picked


def evaluate_rfft(models: str, controlnet: str, data: str, *, base_controlnet: str | None = None,
                  rfnet: str | None = None, depth: str | None = None, saliency: str | None = None,
                  sd_config: str | None = None, lora: str | None = None, lora_scale: float | None = None,
                  split: str = "all", products: int = 100, seeds: int = 4, steps: int = GenerationSettings.steps,
                  size: int = CanvasSpec.width, guidance: float = GenerationSettings.guidance_scale,
                  max_attempts: int = GenerationSettings.max_attempts, threshold: float = GenerationSettings.threshold,
                  seed: int = GenerationSettings.seed, device: str = "cpu", echo=print) -> dict:
    """Generate with both ControlNets and return the metrics dictionary (see the module docstring)."""
    from rfad.models.diffusion import load_controlnet, load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.generate import generate
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.request import prepare_request
    from rfad.pipeline.torch_runner import TorchRunner

    if seeds < 2:
        raise ValueError(f"--seeds {seeds}: the collapse indicator compares seeds; pass at least 2")
    spec = CanvasSpec(width=size, height=size)
    rows, root = load_rows(data, split, spec, echo)
    picked = pick_products(rows, products)
    if len(picked) < products:
        raise ValueError(f"--data {data}: split {split!r} has {len(picked)} distinct usable products, fewer than "
                         f"--products {products}")
    model_set = ModelSet.resolve(models).with_overrides(controlnet=base_controlnet, sd_config=sd_config, lora=lora,
                                                        lora_scale=lora_scale, rfnet=rfnet, depth=depth,
                                                        saliency=saliency)
    diffusion = load_diffusion_models(model_set, device=device)
    judge_models = load_judge_models(model_set, device)
    tuned = load_controlnet(controlnet).to(device).eval().requires_grad_(False)
    controlnets = {"base": diffusion.controlnet, "tuned": tuned}
    first_seeds = [seed + j * max_attempts for j in range(seeds)]

    samples = []
    results: dict[str, dict] = {}
    progress = tqdm(total=len(controlnets) * len(picked) * seeds, unit="image", desc="eval-rfft")
    for name, module in controlnets.items():
        runner = TorchRunner(dataclasses.replace(diffusion, controlnet=module), device, judge=judge_models)
        judge = RunnerJudge(runner)
        attempts, first_available, first_p, distances = [], [], [], []
        first_of_product, backgrounds, readings = [], [], []
        for row in picked:
            canvas = prepare_canvas(resolve_path(root, row.product), spec)
            prepared = prepare_request(runner, canvas, row.prompt)  # once per product, as serving does
            first_images = []
            for first_seed in first_seeds:
                settings = GenerationSettings(steps=steps, guidance_scale=guidance, seed=first_seed,
                                              max_attempts=max_attempts, threshold=threshold)
                result = generate(runner, canvas, row.prompt, settings, caption=row.caption, judge=judge,
                                  prepared=prepared)
                first = result.candidates[0]
                found = any(c.available for c in result.candidates)
                attempts.append(result.attempts if found else max_attempts + 1)
                first_available.append(bool(first.available))
                first_p.append(first.p_available)
                first_images.append(first.image)
                readings.append(_fidelity(first.image, canvas, row.prompt))
                samples.append({"controlnet": name, "id": row.id, "seed": first_seed, "attempts": result.attempts,
                                "available_within_max_attempts": found, "first_available": bool(first.available),
                                "first_p_available": round(first.p_available, 6),
                                "first_fidelity": readings[-1]})
                progress.update(1)
            distances.append(seed_distance(first_images, canvas.product_alpha == 0))
            first_of_product.append(first_images[0])
            backgrounds.append(canvas.product_alpha == 0)
        censored = [a > max_attempts for a in attempts]
        uncensored = [a for a in attempts if a <= max_attempts]
        results[name] = {
            "ava": float(np.mean(first_available)),
            "p_available_mean": float(np.mean(first_p)),
            "attempts_mean": float(np.mean(attempts)),
            "attempts_mean_available": float(np.mean(uncensored)) if uncensored else None,
            "censored": int(sum(censored)),
            "available_within_max_attempts": float(1 - np.mean(censored)),
            "collapse_distance": float(np.mean(distances)),
            "cross_product_distance": cross_product_distance(first_of_product, backgrounds),
            "prompt_fidelity": None if None in readings else fidelity_shares(readings),
        }
    progress.close()
    base_distance = results["base"]["collapse_distance"]
    base_cross, tuned_cross = results["base"]["cross_product_distance"], results["tuned"]["cross_product_distance"]
    return {
        "settings": {"products": len(picked), "seeds": seeds, "steps": steps, "size": size, "guidance": guidance,
                     "max_attempts": max_attempts, "threshold": threshold, "seed": seed, "split": split,
                     "censored_attempts_counted_as": max_attempts + 1},
        "models": {"base_controlnet": str(model_set.controlnet), "tuned_controlnet": str(controlnet),
                   "rfnet": str(model_set.rfnet)},
        "product_ids": [row.id for row in picked],
        "base": results["base"],
        "tuned": results["tuned"],
        "collapse_ratio": results["tuned"]["collapse_distance"] / base_distance if base_distance > 0 else None,
        "cross_product_ratio": tuned_cross / base_cross if base_cross and tuned_cross is not None else None,
        "samples": samples,
    }


def _fidelity(image: np.ndarray, canvas, prompt: str) -> dict | None:
    """The prompt fidelity reading of one image (None: not a miniature-world prompt)."""
    try:
        return read_fidelity(image, np.asarray(canvas.product_rgba), canvas.product_alpha, prompt)
    except ValueError:
        return None


def format_table(metrics: dict) -> str:
    """A Markdown table of the base and tuned rows."""
    m = metrics["settings"]["max_attempts"]
    header = ("| ControlNet | Ava (1 attempt) | mean p(Available) | attempts to Available "
              f"(censored = {m + 1}) | none Available in {m} | distance across seeds | across products "
              "| prompt fidelity |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name in ("base", "tuned"):
        r = metrics[name]
        cross = r.get("cross_product_distance")
        fidelity = (r.get("prompt_fidelity") or {}).get("faithful", {}).get("share")
        lines.append(f"| {name} | {r['ava']:.1%} | {r['p_available_mean']:.4f} | {r['attempts_mean']:.2f} | "
                     f"{r['censored']} | {r['collapse_distance']:.4f} | {'n/a' if cross is None else f'{cross:.4f}'} "
                     f"| {'n/a' if fidelity is None else f'{fidelity:.1%}'} |")
    lines.append("")
    for key, what in (("collapse_ratio", "between seeds of one product"),
                      ("cross_product_ratio", "between products")):
        ratio = metrics.get(key)
        lines.append(f"{key.replace('_', ' ')} (tuned / base pixel distance {what}): "
                     f"{'n/a' if ratio is None else f'{ratio:.3f}'} (1: as varied as the base; well below 1: "
                     "the tuned model repeats itself)")
    lines.append("prompt fidelity: the share of first-attempt images showing the wall, table and reference "
                 "object their prompt names (miniature-world prompts only)")
    return "\n".join(lines)


def write_json(metrics: dict, path: Path) -> None:
    """Write ``metrics`` atomically (a partial file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(metrics, indent=2) + "\n")
    partial.replace(path)
