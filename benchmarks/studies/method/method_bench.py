"""The method, measured in the miniature world: RFNet, Recurrent Generation, RFFT and the early signal.

    python -m benchmarks.studies.method.method_bench --work DIR [--parts data,rfnet,judges,loop,rfft,report] [--n 1200]

The paper's chain (docs/design.md, the miniature world) with the oracle in the annotators' place, on RF-mini
(``rfad-data miniworld``, the shipped generator) and its held-out test products:

- ``data``: RF-mini (``--n`` images, 4 per product, seed 0; reused if ``DIR/rf-mini`` exists),
  then its depth and saliency maps from the tiny zoo's DPT and U2-Net (``rfad-data prepare``):
  the maps the judge computes at serving time, from the same models;
- ``pretrain``: RFNet on ``--pretrain-scenes`` drawn scenes (``rfad-data scenes``, labels by
  construction; the stand-in for the paper's ImageNet-pretrained backbones);
- ``rfnet``: that RFNet fine-tuned on RF-mini's train split (``rfad-train rfnet --tiny --init``,
  128 px): the judge of the loop and of RFFT;
- ``judges``: its ablations (product, caption, depth, saliency, Feature Filter Module off), the
  same RFNet trained from scratch, and the ResNet-only and majority baselines, on the test split
  (:mod:`method.judges`);
- ``loop``: the shipped generator on the test products, ``--seeds`` requests each: single-shot
  oracle availability, RFNet's verdicts, the early signal (RFNet on the decoded x0-prediction at
  25/50/75 % of the steps vs the final oracle verdict, AUC) and Recurrent Generation with RFNet
  in the loop, up to ``--max-attempts`` attempts (:mod:`method.sampling`);
- ``rfft``: ``rfad-train rfft --reg cc|kl|none`` from the shipped generator with that RFNet, then
  the same single-shot evaluation per tuned ControlNet: oracle availability, RFNet availability,
  and the diversity indicator (pixel distance between a product's seeds);
- ``report``: benchmarks/results/method.json and docs/method.md's tables;
- ``ship``: the ``rfnet`` part's judge into ``rfad/miniworld/judge/`` with the zoo's depth and
  saliency models and the canvas, the model set ``rfad demo`` serves (``rfad-train ship-judge``).

Each part writes ``DIR/<part>.json`` (``rfft``: ``DIR/rfft-<reg>-s<steps>.json`` per regulariser and
``--rfft-steps``, so runs of different lengths stand side by side) and is skipped when that file exists (delete it to rerun), so parts can run as separate processes on
separate cores (e.g. ``loop,rfft --regs cc,kl`` beside ``judges`` then ``rfft --regs none``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PARTS = ("data", "pretrain", "rfnet", "judges", "loop", "rfft", "report", "ship")
PRETRAIN_SEED = 11  # the drawn scenes' seed: neither the generator's (0) nor RF-mini's request stream
REGULARISERS = ("cc", "kl", "none")
EARLY_FRACTIONS = (0.25, 0.5, 0.75)


def _done(work: Path, part: str) -> dict | None:
    path = work / f"{part}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _save(work: Path, part: str, value: dict) -> None:
    partial = work / f"{part}.json.partial"
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(work / f"{part}.json")


def part_data(args) -> dict:
    from rfad.tiny.zoo import build_tiny_zoo
    from rfad.trainer.api import MiniworldSettings, prepare_maps, write_miniworld_dataset

    work = args.work
    if not (work / "zoo" / "rfad-models.json").is_file():
        build_tiny_zoo(work / "zoo")
    summary_file = work / "rf-mini" / "summary.json"
    if not summary_file.is_file():
        write_miniworld_dataset(work / "rf-mini", args.n, MiniworldSettings(seed=0), progress=True)
    manifest, report = prepare_maps(work / "rf-mini" / "manifest.jsonl", work / "zoo" / "dpt", work / "zoo" / "u2net",
                                    work / "rf-mini-maps", device="cpu")
    return {"rf_mini": json.loads(summary_file.read_text()), "manifest": str(manifest),
            "maps": {"rows": report.rows, "computed": report.computed, "skipped": report.bad.n_skipped}}


def data_manifest(work: Path) -> Path:
    return work / "rf-mini-maps" / "manifest.jsonl"


def part_pretrain(args) -> dict:
    from rfad.trainer.api import TINY_LR, TRAIN_LOG, RFNetTrainConfig, train_rfnet, write_scene_dataset

    scenes, out = args.work / "pretrain-scenes", args.work / "rfnet-scenes"
    if not (scenes / "manifest.jsonl").is_file():
        write_scene_dataset(scenes, args.pretrain_scenes, seed=PRETRAIN_SEED)
    start = time.perf_counter()
    if not (out / TRAIN_LOG).is_file():
        train_rfnet(RFNetTrainConfig(data=str(scenes), out=str(out), tiny=True, epochs=args.pretrain_epochs,
                                     image_size=args.image_size, lr=TINY_LR, batch_size=args.batch_size,
                                     seed=args.seed), echo=lambda *_: None)
    history = json.loads((out / TRAIN_LOG).read_text())["history"]
    return {"scenes": args.pretrain_scenes, "epochs": args.pretrain_epochs, "history": history,
            "seconds_if_trained_here": round(time.perf_counter() - start, 1)}


def part_rfnet(args) -> dict:
    from benchmarks.studies.method.judges import VARIANTS, train_variant

    name, ablate = VARIANTS[0]
    return {"judge": name, **train_variant(data_manifest(args.work), args.work / "rfnet-full", ablate, args.epochs,
                                           args.image_size, args.batch_size, args.seed, args.work / "rfnet-scenes")}


def part_judges(args) -> dict:
    from benchmarks.studies.method.judges import judge_table, train_variant

    from rfad.trainer.api import TINY_LR

    rows = judge_table(data_manifest(args.work), args.work / "pretrain-scenes", args.work, args.work / "rfnet-scenes",
                       args.pretrain_epochs, args.epochs, args.image_size, args.batch_size, TINY_LR, args.seed)
    scratch = train_variant(data_manifest(args.work), args.work / "rfnet-scratch", (), args.epochs, args.image_size,
                            args.batch_size, args.seed)
    rows.insert(1, {"judge": "RFNet, no pretraining", **scratch})
    return {"rows": rows}


def _runner(args, controlnet: Path | None = None):
    """(torch runner over the shipped generator with RFNet + the zoo's maps, its judge)."""
    import dataclasses

    from rfad.miniworld import model_dir
    from rfad.models.diffusion import load_controlnet, load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.torch_runner import TorchRunner

    model_set = ModelSet.resolve(model_dir()).with_overrides(
        rfnet=args.work / "rfnet-full", depth=args.work / "zoo" / "dpt", saliency=args.work / "zoo" / "u2net")
    diffusion = load_diffusion_models(model_set)
    if controlnet is not None:
        diffusion = dataclasses.replace(diffusion, controlnet=load_controlnet(controlnet).eval().requires_grad_(False))
    runner = TorchRunner(diffusion, "cpu", judge=load_judge_models(model_set))
    return runner, RunnerJudge(runner)


def _products(args):
    from benchmarks.studies.method.sampling import test_products

    from rfad.trainer.api import load_split_rows

    rows, root = load_split_rows(data_manifest(args.work), "test", lambda *_: None)
    return test_products(rows, root, args.products)


def _settings(args):
    from rfad.pipeline.settings import GenerationSettings

    return GenerationSettings(steps=args.steps, guidance_scale=args.guidance, max_attempts=args.max_attempts)


def _single_shot_record(samples: list[dict], products, controlnet: str) -> dict:
    """The summary of single-shot samples (diversity over each product's background), samples without pixels."""
    from benchmarks.studies.method.metrics import single_shot_summary

    from rfad.contract import DEFAULTS

    backgrounds = {product.id: product.canvas.product_alpha == 0 for product in products}
    return {"controlnet": controlnet, **single_shot_summary(samples, DEFAULTS.threshold, backgrounds),
            "samples": [{k: v for k, v in s.items() if k != "image"} for s in samples]}


def part_loop(args) -> dict:
    from benchmarks.studies.method.metrics import recurrent_summary
    from benchmarks.studies.method.sampling import recurrent, single_shot

    runner, judge = _runner(args)
    products, settings = _products(args), _settings(args)
    start = time.perf_counter()
    shots = single_shot(runner, judge, products, args.seeds, settings, EARLY_FRACTIONS, args.max_attempts)
    single_seconds = time.perf_counter() - start
    start = time.perf_counter()
    loops = recurrent(runner, judge, products, args.recurrent_seeds, settings, args.max_attempts)
    return {"single_shot": {**_single_shot_record(shots, products, "shipped"), "seconds": round(single_seconds, 1)},
            "recurrent": {**recurrent_summary(loops, args.max_attempts), "samples": loops,
                          "seconds": round(time.perf_counter() - start, 1)}}


def part_rfft(args) -> dict:
    """Train and evaluate each of ``--regs`` not yet in ``WORK/rfft-<reg>.json`` (so regularisers can run
    as separate processes); returns every regulariser's result present."""
    from benchmarks.studies.method.sampling import single_shot

    from rfad.miniworld import model_dir
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.trainer.api import RFFTConfig, train_rfft

    settings = {"steps": args.rfft_steps, "batch_size": args.rfft_batch, "grad_accum": args.rfft_accum,
                "lr": args.rfft_lr, "beta": args.beta, "last_k": args.last_k}
    for reg in args.regs:
        name = rfft_name(reg, args.rfft_steps)
        if _done(args.work, name) is not None:
            continue
        out = args.work / name
        start = time.perf_counter()
        if not (out / "config.json").is_file():
            train_rfft(RFFTConfig(models=str(model_dir()), rfnet=str(args.work / "rfnet-full"),
                                  depth=str(args.work / "zoo" / "dpt"), saliency=str(args.work / "zoo" / "u2net"),
                                  data=str(data_manifest(args.work)), out=str(out), steps=args.rfft_steps,
                                  batch_size=args.rfft_batch, grad_accum=args.rfft_accum, lr=args.rfft_lr, reg=reg,
                                  beta=args.beta, ddim_steps=args.steps, last_k=args.last_k, guidance=args.guidance,
                                  size=MINIWORLD_CANVAS.width, product_scale=MINIWORLD_CANVAS.product_scale,
                                  upscale=MINIWORLD_CANVAS.upscale, mask_dilation=MINIWORLD_CANVAS.mask_dilation,
                                  seed=args.seed), echo=lambda *_: None)
        train_seconds = time.perf_counter() - start
        runner, judge = _runner(args, out)
        products = _products(args)
        shots = single_shot(runner, judge, products, args.seeds, _settings(args), (), args.max_attempts,
                            desc=f"rfft {reg}")
        log = json.loads((out / "rfft_config.json").read_text()) if (out / "rfft_config.json").is_file() else {}
        _save(args.work, name, {"reg": reg, **_single_shot_record(shots, products, str(out)), "settings": settings,
                                "train_seconds": round(train_seconds, 1), "run_record": log})
    return rfft_runs(args.work)


def rfft_name(reg: str, steps: int) -> str:
    """A run's folder and result name in WORK: runs of different lengths stand side by side."""
    return f"rfft-{reg}-s{steps}"


def rfft_runs(work: Path) -> dict:
    """The results of every RFFT run evaluated so far (``WORK/rfft-<reg>-s<steps>.json``), shortest
    first, regularisers in REGULARISERS order: ``{"runs": {name: result}}``."""
    found = [(json.loads(path.read_text()), path.stem) for path in work.glob("rfft-*-s*.json")]
    found.sort(key=lambda item: (item[0]["settings"]["steps"], REGULARISERS.index(item[0]["reg"])))
    return {"runs": {name: run for run, name in found}}


def part_report(args) -> dict:
    from benchmarks.studies.method.method_report import render, result_rows

    from benchmarks.common import write_results

    parts = {name: _done(args.work, name) for name in ("data", "pretrain", "rfnet", "judges", "loop")}
    parts["rfft"] = rfft_runs(args.work)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("parts",)}
    path = write_results("method", result_rows(parts), settings)
    render()
    return {"results": str(path)}


def part_ship(args) -> dict:
    """``rfad-train ship-judge``'s work on the ``rfnet`` part's judge, into the package's rfad/miniworld/judge/."""
    from rfad.trainer.api import ship_judge
    from benchmarks.common import ROOT

    made_by = ("python -m benchmarks.studies.method.method_bench --parts data,pretrain,rfnet (RF-mini, drawn-scene "
               "pretraining, rfad-train rfnet --tiny --init) then --parts ship")
    return ship_judge(args.work / "rfnet-full", args.work / "zoo" / "dpt", args.work / "zoo" / "u2net",
                      args.work / "rfnet.json", ROOT / "rfad" / "miniworld" / "judge", sys.argv, made_by=made_by)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="Working folder (RF-mini, models, part results).")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--n", type=int, default=1200, help="RF-mini images (4 per product).")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-scenes", type=int, default=4000, help="Drawn scenes the judges are pretrained on.")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--products", type=int, default=None, help="Test products to generate for [default: all].")
    parser.add_argument("--seeds", type=int, default=4, help="Single-shot requests per product.")
    parser.add_argument("--recurrent-seeds", type=int, default=2, help="Recurrent Generation requests per product.")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--regs", default=",".join(REGULARISERS))
    parser.add_argument("--rfft-steps", type=int, default=40)
    parser.add_argument("--rfft-batch", type=int, default=2)
    parser.add_argument("--rfft-accum", type=int, default=2)
    parser.add_argument("--rfft-lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--last-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's].")
    args = parser.parse_args()
    args.regs = [r for r in args.regs.split(",") if r]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rfad.logs import quiet_third_party

    quiet_third_party()
    for part in [p for p in args.parts.split(",") if p]:
        if part not in PARTS:
            parser.error(f"--parts: unknown part {part!r}; expected any of {', '.join(PARTS)}")
        if part not in ("report", "rfft", "ship") and _done(args.work, part) is not None:  # rfft: per regulariser
            print(f"{part}: {args.work / (part + '.json')} exists, skipped")
            continue
        start = time.perf_counter()
        result = globals()[f"part_{part}"](args)
        if part not in ("report", "ship"):
            _save(args.work, part, {**result, "seconds": round(time.perf_counter() - start, 1)})
        print(f"{part}: done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
