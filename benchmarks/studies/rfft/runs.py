"""RFFT's runs and their evaluation: one tuned ControlNet per setting and training seed, judged on held-out products.

A setting is (regulariser, learning rate, beta, steps). Settings that differ only in steps share
one training run: the optimiser has no schedule, so the run stopped at 50 steps and resumed to
150 is the 150-step run (``rfad-train rfft --resume``); the ControlNet at each step count of the
grid is copied aside as it is reached (``WORK/controlnets/<setting>-seed<K>``).

Every ControlNet, the base included, paints ``images`` candidates per product with consecutive
seeds: exactly the attempts of one Recurrent Generation request (:mod:`benchmarks.studies.method.loop_arms`),
one candidate per attempt, through serving's own generation code (:func:`benchmarks.studies.method.sampling.single_shot`).
Per image the record keeps the oracle's label, the judge's p(Available) and the prompt fidelity
reading; per product the distance between its seeds' images and the mean distance from its first
image to every other product's first image (diversity across products). Images are not kept.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JUDGE = "RFNet"                           # the judge's key in the records' probabilities
CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "rfft_config.json")


@dataclass(frozen=True)
class Setting:
    """One RFFT setting of the study (everything else is the study's fixed recipe)."""

    reg: str
    lr: float
    beta: float
    steps: int

    @property
    def name(self) -> str:
        return f"{self._run_stem}-steps{self.steps}"

    def run(self, seed: int) -> str:
        """The training run this setting's ControlNet comes from (the steps are points along it)."""
        return f"{self._run_stem}-seed{seed}"

    @property
    def _run_stem(self) -> str:
        beta = "" if self.reg == "none" else f"-beta{self.beta:g}"  # beta weighs no term without a regulariser
        return f"{self.reg}-lr{self.lr:g}{beta}"

    @classmethod
    def parse(cls, name: str) -> "Setting":
        """The setting named ``name`` (:attr:`name`)."""
        fields = dict(reg=name.split("-")[0], beta=1.0)
        for part in name.split("-")[1:]:
            for key, cast in (("lr", float), ("beta", float), ("steps", int)):
                if part.startswith(key):
                    fields[key] = cast(part[len(key):])
        return cls(**fields)


@dataclass(frozen=True)
class Recipe:
    """What every RFFT run of the study shares: the generation it tunes for, the batch, the step t*."""

    ddim_steps: int = 20          # RF-mini's and the served loop's DDIM steps (MiniworldSettings.steps)
    guidance: float = 7.5
    last_k: int = 5               # t* among the last 5 of 20 steps: the paper's share (10 of 40)
    batch_size: int = 2
    grad_accum: int = 2


def controlnet_folder(work: Path, setting: Setting, seed: int) -> Path:
    return work / "controlnets" / f"{setting.name}-seed{seed}"


def train_setting(work: Path, world: Path, data: Path, setting: Setting, seed: int, recipe: Recipe,
                  steps_grid: list[int], echo=print) -> Path:
    """The tuned ControlNet of ``setting`` at training ``seed``: trained (or resumed) along its run to each
    of ``steps_grid`` up to ``setting.steps``, each step count's ControlNet copied aside; returns its folder."""
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.trainer.api import RFFTConfig, latest_checkpoint, train_rfft

    run = work / "runs" / setting.run(seed)
    for steps in sorted(s for s in set(steps_grid) | {setting.steps} if s <= setting.steps):
        target = controlnet_folder(work, dataclasses.replace(setting, steps=steps), seed)
        if (target / CONTROLNET_FILES[1]).is_file():
            continue
        start = time.perf_counter()
        train_rfft(RFFTConfig(models=str(world), data=str(data), out=str(run), split="train", steps=steps,
                              batch_size=recipe.batch_size, grad_accum=recipe.grad_accum, lr=setting.lr,
                              reg=setting.reg, beta=setting.beta, ddim_steps=recipe.ddim_steps, last_k=recipe.last_k,
                              guidance=recipe.guidance, size=MINIWORLD_CANVAS.width,
                              product_scale=MINIWORLD_CANVAS.product_scale, upscale=MINIWORLD_CANVAS.upscale,
                              mask_dilation=MINIWORLD_CANVAS.mask_dilation, seed=seed,
                              resume=latest_checkpoint(run) is not None), echo=echo)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in CONTROLNET_FILES:
            shutil.copy2(run / name, staging / name)
        (staging / "train_seconds.json").write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}))
        staging.replace(target)
    return controlnet_folder(work, setting, seed)


def load_world(world: Path, device: str = "cpu"):
    """(the world's diffusion models, its judge models): loaded once, every ControlNet swapped in."""
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet

    model_set = ModelSet.resolve(world)
    return load_diffusion_models(model_set, device=device), load_judge_models(model_set, device)


def evaluate(world_models, controlnet: Path | None, products, images: int, recipe: Recipe, desc: str) -> dict:
    """``images`` consecutive-seed candidates per product from ``controlnet`` (None: the world's own):
    {"records": one per image, "products": one per product (diversity)}."""
    from benchmarks.studies.method.sampling import single_shot
    from rfad.models.diffusion import load_controlnet
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.settings import GenerationSettings
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.trainer.api import cross_pair_distances, seed_distance

    diffusion, judge_models = world_models
    if controlnet is not None:
        diffusion = dataclasses.replace(diffusion, controlnet=load_controlnet(controlnet).eval().requires_grad_(False))
    runner = TorchRunner(diffusion, "cpu", judge=judge_models)
    settings = GenerationSettings(steps=recipe.ddim_steps, guidance_scale=recipe.guidance)
    # max_attempts 1: candidate j of product i has seed EVAL_SEED + i * SEED_STRIDE + j, the seeds of the
    # attempts of one loop request.
    shots = single_shot(runner, RunnerJudge(runner), products, images, settings, (), max_attempts=1, desc=desc)
    records = [{"product": s["product"], "seed": s["seed"], "oracle": s["oracle"], "fidelity": _compact(s["fidelity"]),
                "probabilities": {JUDGE: [round(s["p_available"], 6)]}} for s in shots]
    by_product: dict[str, list[np.ndarray]] = {}
    for s in shots:
        by_product.setdefault(s["product"], []).append(s["image"])
    backgrounds = {p.id: p.canvas.product_alpha == 0 for p in products}
    ids = list(by_product)
    cross = cross_pair_distances([by_product[i][0] for i in ids], [backgrounds[i] for i in ids])
    per_product = [{"product": i, "seed_distance": seed_distance(by_product[i], backgrounds[i]) if images > 1 else None,
                    "cross_distance": float(np.nanmean(np.delete(cross[k], k))) if len(ids) > 1 else None}
                   for k, i in enumerate(ids)]
    return {"records": records, "products": per_product}


def _compact(reading: dict | None) -> dict | None:
    """The fidelity reading without the names read (kept: what was named and whether it was seen)."""
    return None if reading is None else {k: reading[k] for k in ("wall", "table", "reference", "faithful")}
