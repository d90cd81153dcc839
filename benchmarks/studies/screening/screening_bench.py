"""Early screening, measured: Available images per CPU-second and per denoising step, with and without.

    python -m benchmarks.studies.screening.screening_bench --work DIR [--parts auc,choose,inprocess,served,report]
        [--screen-rfnet DIR] [--val-products 16] [--test-products 45] [--requests 2] [--max-attempts 5]

On the miniature world (``--models``, default the shipped one: generator + RF-mini judge, placed on
its declared canvas) and RF-mini's products (the request stream, seed 0, ``--world-products``
products split as RF-mini's: its validation and test products, never trained on):

- ``auc``: ``--seeds`` candidates per validation and test product, each denoised alone; at each
  ``--auc-fractions`` step the x0-prediction is decoded, pasted and judged by RFNet (and by
  ``--screen-rfnet``, a noise-aware screening judge: ``rfad-data previews`` then
  ``rfad-train rfnet --init``), the final image by RFNet and the oracle. AUC of p(Available) by
  step against the final oracle verdict, with bootstrap-by-product 95 % intervals;
- ``choose``: on the validation products, ``--requests`` requests per product through the real
  loop in process, without screening and at each (``--grid-at`` x ``--grid-thresholds``)
  screening setting: the setting with the most oracle-Available images per CPU-second is chosen;
- ``inprocess``: on the test products, the same requests without screening and with the chosen
  setting, torch runner, the same ``--max-attempts``;
- ``served``: the same requests through Triton (the models exported to ``DIR/onnx``, the
  repository in ``DIR/repo``, python backend; CPU seconds of the server's process tree);
- ``report``: ``--out`` (JSON: every table, with intervals) and, beside it, the per-request and
  per-candidate records (``<out>.records.jsonl``) and the table (``<out>.md``).

Per arm: oracle-Available returned images per CPU-second and per 1000 candidate-steps (a
candidate-step is one candidate through one denoising step; screened-out candidates count the
steps they ran), oracle availability of the returned images, p50/p99 time to the first Available
image (requests that return none count as never), and the screened arm over the baseline
(paired by product). Each part writes ``DIR/<part>.json`` and is skipped when that file exists
(delete it to rerun), so parts run as separate processes and a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PARTS = ("auc", "choose", "inprocess", "served", "report")
RESULTS = Path(__file__).resolve().parents[2] / "results"


def _done(work: Path, part: str) -> dict | None:
    path = work / f"{part}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _save(work: Path, part: str, value: dict) -> None:
    partial = work / f"{part}.json.partial"
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(work / f"{part}.json")


def _model_set(args):
    from rfad.miniworld import world_dir
    from rfad.models.model_set import ModelSet

    model_set = ModelSet.resolve(args.models or world_dir())
    return model_set if args.screen_rfnet is None else model_set.with_overrides(screen_rfnet=args.screen_rfnet)


def _runner(args):
    """(torch runner with the judge (and screening RFNet), the judge, the screening judge or None)."""
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.torch_runner import TorchRunner

    model_set = _model_set(args)
    runner = TorchRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))
    return runner, RunnerJudge(runner), RunnerJudge(runner, screen=True) if runner.info.screen_judge else None


def _products(args) -> dict:
    from benchmarks.studies.screening.runs import world_products

    return world_products(args.world_products, args.world_seed, args.available_share, args.val_products,
                          args.test_products)


def _settings(args, screen_at: float | None = None, screen_threshold: float | None = None, seed: int = 0):
    from rfad.pipeline.settings import GenerationSettings

    return GenerationSettings(steps=args.steps, guidance_scale=args.guidance, seed=seed, candidates=args.candidates,
                              num_images=1, max_attempts=args.max_attempts, threshold=args.threshold,
                              screen_at=screen_at, screen_threshold=screen_threshold)


def _arm(screen_at: float | None, screen_threshold: float | None) -> str:
    return "baseline" if screen_at is None else f"screen@{screen_at:g}<{screen_threshold:g}"


def part_auc(args) -> dict:
    from benchmarks.studies.screening.runs import probe, request_seed

    from rfad.contract import screening_step

    runner, judge, screen_judge = _runner(args)
    judges = {"rfnet": judge, **({"screen_rfnet": screen_judge} if screen_judge is not None else {})}
    steps = sorted({screening_step(f, args.steps) for f in args.auc_fractions})
    records = []
    for split, products in _products(args).items():
        for product in products:
            for j in range(args.seeds):
                records.append(probe(runner, judges, product, request_seed(product, j), _settings(args), steps))
                print(f"auc: {split} product {product.id} seed {j}: oracle {records[-1]['oracle']}", flush=True)
    return {"steps": steps, "judges": list(judges), "records": records}


def _requests(args, products, screen_at, screen_threshold, run) -> list[dict]:
    from benchmarks.studies.screening.runs import request_seed

    records = []
    for product in products:
        for j in range(args.requests):
            seed = request_seed(product, j)
            records.append(run(product, seed, _settings(args, screen_at, screen_threshold, seed),
                               _arm(screen_at, screen_threshold)))
    return records


def _local(args, products, arms) -> dict[str, list[dict]]:
    from benchmarks.studies.screening.runs import local_request

    runner, judge, screen_judge = _runner(args)
    out = {}
    for screen_at, screen_threshold in arms:
        name = _arm(screen_at, screen_threshold)
        out[name] = _requests(args, products, screen_at, screen_threshold,
                              lambda product, seed, settings, arm: local_request(runner, judge, screen_judge, product,
                                                                                 seed, settings, arm))
        print(f"{name}: {len(out[name])} requests", flush=True)
    return out


def part_choose(args) -> dict:
    from benchmarks.studies.screening.summary import arm_summary

    grid = [(at, threshold) for at in args.grid_at for threshold in args.grid_thresholds]
    arms = _local(args, _products(args)["val"], [(None, None), *grid])
    rows = {name: arm_summary(records, args.bootstrap) for name, records in arms.items()}
    scored = [(rows[_arm(*setting)]["available_per_cpu_s"]["value"] or 0.0, setting) for setting in grid]
    best = max(scored)[1]
    return {"grid": [list(setting) for setting in grid], "chosen": {"screen_at": best[0], "screen_threshold": best[1]},
            "rule": "most oracle-Available returned images per CPU-second on the validation products",
            "summaries": rows, "records": [r for records in arms.values() for r in records]}


def _chosen(args) -> tuple[float, float]:
    choice = _done(args.work, "choose")
    if choice is None:
        raise SystemExit("run the choose part first (the screening setting is chosen on validation products)")
    return choice["chosen"]["screen_at"], choice["chosen"]["screen_threshold"]


def part_inprocess(args) -> dict:
    arms = _local(args, _products(args)["test"], [(None, None), _chosen(args)])
    return {"arms": list(arms), "records": [r for records in arms.values() for r in records]}


def part_served(args) -> dict:
    from benchmarks.studies.screening.runs import served_request

    from rfad.client import RfadClient
    from rfad.export.api import export_onnx, write_triton_repo
    from rfad.serving.launcher import TritonServer

    if not (args.work / "onnx" / "manifest.json").is_file():
        export_onnx(_model_set(args), args.work / "onnx", served="merged")
    if not (args.work / "repo" / "deployment.json").is_file():
        write_triton_repo(args.work / "onnx", args.work / "repo", backend="python")
    products = _products(args)["test"]
    records = []
    with TritonServer(args.work / "repo", grpc_port=0, http_port=0, metrics_port=0,
                      log_file=args.work / "server.log") as server:
        client = RfadClient(server.grpc_url, retries=0)
        for screen_at, screen_threshold in [(None, None), _chosen(args)]:
            records += _requests(args, products, screen_at, screen_threshold,
                                 lambda product, seed, settings, arm: served_request(client, server.process.pid,
                                                                                     product, seed, settings, arm))
    return {"records": records}


def part_report(args) -> dict:
    from benchmarks.studies.screening.summary import report

    parts = {name: _done(args.work, name) for name in PARTS if name != "report"}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "parts"}
    if args.screen_rfnet is not None:
        settings["screen_rfnet_training"] = _training_record(args.screen_rfnet)
    from benchmarks.common import machine

    result, table = report(parts, args.bootstrap, settings)
    result["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    records = args.out.with_suffix(".records.jsonl")
    with open(records, "w", encoding="utf-8") as file:
        for name, part in parts.items():
            for record in (part or {}).get("records", []):
                file.write(json.dumps({"part": name, **record}) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return {"results": str(args.out), "records": str(records)}


def _training_record(rfnet: Path) -> dict | None:
    """How a screening RFNet was made: its training settings and last epoch (train_log.json) and
    the x0-preview dataset's summary (``rfad-data previews``), where they are there."""
    log_file = rfnet / "train_log.json"
    if not log_file.is_file():
        return None
    log = json.loads(log_file.read_text())
    config = log["config"]
    summary_file = Path(config["data"]) / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    return {"config": {k: config.get(k) for k in ("init", "data", "epochs", "lr", "lr_step_epoch", "batch_size",
                                                  "image_size", "seed")},
            "last_epoch": log["history"][-1] if log.get("history") else None,
            "previews": None if summary is None else {k: summary[k] for k in ("images", "splits", "labels")}
            | {"screen_step": summary["settings"]["screen_step"], "steps": summary["settings"]["steps"],
               "world_products": summary["settings"].get("world_products")}}


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="Working folder (part results, ONNX, repository).")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--models", type=Path, help="Model set [default: the miniature world's].")
    parser.add_argument("--screen-rfnet", type=Path, help="A screening RFNet (the model set's screen_rfnet).")
    parser.add_argument("--world-products", type=int, default=300, help="Products in the request stream (RF-mini's).")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--available-share", type=float, default=0.4)
    parser.add_argument("--val-products", type=int, default=16)
    parser.add_argument("--test-products", type=int, default=45)
    parser.add_argument("--seeds", type=int, default=4, help="Candidates per product for the AUC by step.")
    parser.add_argument("--requests", type=int, default=2, help="Requests per product and arm.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--candidates", type=int, default=1)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.5, help="The final judge's p(Available) threshold.")
    parser.add_argument("--auc-fractions", type=_floats, default=_floats("0.1,0.25,0.5,0.75"))
    parser.add_argument("--grid-at", type=_floats, default=_floats("0.25,0.5"))
    parser.add_argument("--grid-thresholds", type=_floats, default=_floats("0.1,0.2,0.35"))
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples of the products.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's].")
    parser.add_argument("--out", type=Path, default=RESULTS / "screening.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rfad.logs import quiet_third_party

    quiet_third_party()
    for part in [p for p in args.parts.split(",") if p]:
        if part not in PARTS:
            parser.error(f"--parts: unknown part {part!r}; expected any of {', '.join(PARTS)}")
        if part != "report" and _done(args.work, part) is not None:
            print(f"{part}: {args.work / (part + '.json')} exists, skipped")
            continue
        start = time.perf_counter()
        result = globals()[f"part_{part}"](args)
        if part != "report":
            _save(args.work, part, {**result, "seconds": round(time.perf_counter() - start, 1)})
        print(f"{part}: done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
