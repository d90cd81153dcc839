"""RFFT in miniature under the frozen protocol: settings chosen on validation products, reported once on test.

    python -m benchmarks.studies.rfft.rfft_study --work DIR --data RF-MINI-MANIFEST [--world DIR]
        [--parts sweep,choose,final,report] [--regs cc,kl,none] [--lrs ..] [--betas ..] [--steps-grid ..]

``--data`` is the method bench's RF-mini with its maps (``WORK/rf-mini-maps/manifest.jsonl`` of
``benchmarks.studies.method.method_bench``): RFFT trains on its TRAIN products only; its VALIDATION
products decide every setting; its TEST products are read by the ``final`` part alone, after the
choice is written. ``--world`` is the model set whose ControlNet is tuned and whose RFNet gives the
feedback and judges the outputs [default: the shipped miniature world]. The oracle is the
independent verdict. Parts, each saved as ``DIR/<part>.json`` and skipped when that file exists
(delete it to rerun); every training run and every evaluation inside a part is kept and resumed,
and ``--shard I/N`` deals a part's training runs over N processes:

- ``sweep``: every setting (``--regs`` x ``--lrs`` x ``--betas`` x ``--steps-grid``; ``none`` has no
  beta) trained at seed 0, and the base, evaluated on ``--val-images`` images per validation product;
- ``choose``: per regulariser, the setting with the highest oracle availability on validation
  among those that keep diversity across seeds and products (>= 0.85 x the base's) and prompt
  fidelity (within 5 points); ``none`` at the learning rate and steps chosen for ``cc``;
- ``final``: each chosen setting at every ``--seeds`` seed and the base, ``--test-images`` images per
  test product (the attempts of one loop request each);
- ``report``: benchmarks/results/rfft.json, the per-image records
  (benchmarks/results/rfft_records_<split>.jsonl), the figure and docs/method.md's RFFT blocks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.studies.rfft import summary as tables
from benchmarks.studies.rfft.runs import Recipe, Setting, evaluate, load_world, train_setting

PARTS = ("sweep", "choose", "final", "report")
REGULARISERS = ("cc", "kl", "none")


def _done(work: Path, part: str) -> dict | None:
    path = work / f"{part}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _save(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value) + "\n")
    partial.replace(path)


def sweep_settings(args) -> list[Setting]:
    settings = []
    for reg in args.regs:
        for lr in args.lrs:
            for beta in ([1.0] if reg == "none" else args.betas):
                settings += [Setting(reg, lr, beta, steps) for steps in args.steps_grid]
    return settings


def split_products(args, split: str, limit: int | None):
    """The distinct products of ``split`` in manifest order, placed on the miniature world's canvas."""
    from benchmarks.studies.method.sampling import test_products
    from rfad.trainer.api import load_split_rows

    rows, root = load_split_rows(args.data, split, print)
    products = test_products(rows, root, limit)
    if not products:
        raise SystemExit(f"--data {args.data}: split {split!r} has no product")
    return products


class Evaluations:
    """Evaluations kept in ``WORK/evals/<controlnet>-<split>.json``: computed once, read back after."""

    def __init__(self, args, split: str, products, images: int):
        self.args, self.split, self.products, self.images = args, split, products, images
        self._world = None

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def _path(self, name: str) -> Path:
        return self.args.work / "evals" / f"{name}-{self.split}.json"

    def get(self, name: str, controlnet: Path | None) -> dict:
        path = self._path(name)
        made_with = {"world": str(Path(self.args.world).resolve()), "recipe": vars(self.args.recipe),
                     "images_per_product": self.images, "product_ids": [p.id for p in self.products]}
        if path.is_file():
            kept = json.loads(path.read_text())
            changed = sorted(key for key, value in made_with.items() if kept.get(key) != value)
            if changed:
                raise SystemExit(f"{path}: evaluated with another {', '.join(changed)}; use another --work or "
                                 "delete the evaluation")
            return kept
        if self._world is None:
            self._world = load_world(self.args.world)
        start = time.perf_counter()
        result = evaluate(self._world, controlnet, self.products, self.images, self.args.recipe,
                          desc=f"{name} on {self.split}")
        result.update(controlnet=name, split=self.split, seconds=round(time.perf_counter() - start, 1), **made_with)
        _save(path, result)
        return result


def _train(args, setting: Setting, seed: int) -> Path:
    return train_setting(args.work, args.world, args.data, setting, seed, args.recipe, args.steps_grid,
                         echo=lambda *_: None)


def _run_share(args, evaluations: Evaluations, runs: dict[str, list[tuple[Setting, int]]]) -> bool:
    """The base and every training run of ``runs`` (run name -> its (setting, seed) points in steps order),
    this process's share of them (``--shard I/N``: the base to shard 0, runs dealt in turn): each point
    trained and evaluated. True once every evaluation exists, whichever process made it."""
    index, count = args.shard
    tasks = [("base", [])] + list(runs.items())
    for name, points in tasks[index::count]:
        if name == "base":
            evaluations.get("base", None)
        for setting, seed in points:
            name = f"{setting.name}-seed{seed}"
            evaluations.get(name, None if evaluations.has(name) else _train(args, setting, seed))
    names = ["base"] + [f"{setting.name}-seed{seed}" for points in runs.values() for setting, seed in points]
    return all(evaluations.has(name) for name in names)


def _by_run(points: list[tuple[Setting, int]]) -> dict[str, list[tuple[Setting, int]]]:
    runs: dict[str, list[tuple[Setting, int]]] = {}
    for setting, seed in sorted(points, key=lambda p: p[0].steps):
        runs.setdefault(setting.run(seed), []).append((setting, seed))
    return runs


def part_sweep(args) -> dict | None:
    products = split_products(args, "val", args.val_products)
    evaluations = Evaluations(args, "val", products, args.val_images)
    settings = sweep_settings(args)
    if not _run_share(args, evaluations, _by_run([(setting, 0) for setting in settings])):
        return None
    return {"split": "val", "products": len(products), "images_per_product": args.val_images,
            "settings": [setting.name for setting in settings]}


def _summaries(args, split: str, names_and_seeds: dict[str, list[int]], images: int,
               comparisons: tuple[tuple[str, str], ...] = ()) -> dict:
    """{"base": summary, name: summary vs the base}, from the kept evaluations of ``split``; with
    ``comparisons`` ((a, b) setting names), a against b paired (:func:`summary.compare`)."""
    folder = args.work / "evals"
    load = lambda name: json.loads((folder / f"{name}-{split}.json").read_text())  # noqa: E731
    base = load("base")
    products = list(dict.fromkeys(r["product"] for r in base["records"]))
    group = lambda evaluations: tables.Group(evaluations, products, args.threshold, args.max_attempts)  # noqa: E731
    groups = {"base": group([base])}
    groups.update({name: group([load(f"{name}-seed{s}") for s in seeds]) for name, seeds in names_and_seeds.items()})
    out = {name: tables.summarize(g, None if name == "base" else groups["base"], products, args.draws)
           for name, g in groups.items()}
    compared = {f"{a} vs {b}": tables.compare(groups[a], groups[b], products, args.draws) for a, b in comparisons}
    return {"products": len(products), "images_per_product": images, "summaries": out, "comparisons": compared}


def part_choose(args) -> dict:
    sweep = _done(args.work, "sweep")
    if sweep is None:
        raise SystemExit("choose: run the sweep part first")
    val = _summaries(args, "val", {name: [0] for name in sweep["settings"]}, sweep["images_per_product"])
    chosen = tables.choose({k: v for k, v in val["summaries"].items() if k != "base"}, ("cc", "kl"))
    if "none" in args.regs and "cc" in chosen:
        # `none` at the same learning rate and steps as `cc`: what the regulariser adds, all else equal.
        cc = Setting.parse(chosen["cc"]["setting"])
        same = Setting("none", cc.lr, 1.0, cc.steps).name
        if same in val["summaries"]:
            chosen["none"] = {"setting": same, "rule": "cc's learning rate and steps"}
    return {"val": val, "chosen": chosen}


def part_final(args) -> dict | None:
    choice = _done(args.work, "choose")
    if choice is None:
        raise SystemExit("final: run the choose part first (the test split is read only after the choice)")
    products = split_products(args, "test", None)
    evaluations = Evaluations(args, "test", products, args.test_images)
    settings = [Setting.parse(entry["setting"]) for entry in choice["chosen"].values()]
    if not _run_share(args, evaluations, _by_run([(setting, seed) for setting in settings for seed in args.seeds])):
        return None
    names = {setting.name: list(args.seeds) for setting in settings}
    # The comparisons: cc against kl; none against cc (the collapse the regulariser prevents).
    chosen = {reg: entry["setting"] for reg, entry in choice["chosen"].items()}
    pairs = tuple((chosen[a], chosen[b]) for a, b in (("cc", "kl"), ("none", "cc")) if a in chosen and b in chosen)
    return {"test": _summaries(args, "test", names, args.test_images, pairs), "seeds": list(args.seeds)}


def part_report(args) -> dict:
    from benchmarks.studies.rfft.report import write_report

    return {"results": str(write_report(args))}


def _floats(value: str) -> list[float]:
    return [float(v) for v in value.split(",") if v]


def _shard(value: str) -> tuple[int, int]:
    index, count = (int(part) for part in value.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {value!r}")
    return index, count


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="Working folder (runs, ControlNets, evaluations).")
    parser.add_argument("--data", type=Path, required=True, help="RF-mini's manifest with maps, split by product.")
    parser.add_argument("--world", type=Path, help="Model set: generator, judge, maps [default: the shipped world].")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--regs", default=",".join(REGULARISERS))
    parser.add_argument("--lrs", type=_floats, default=_floats("3e-4,1e-3"))
    parser.add_argument("--betas", type=_floats, default=_floats("0.3,1,3"))
    parser.add_argument("--steps-grid", type=_ints, default=_ints("50,150"))
    parser.add_argument("--seeds", type=_ints, default=_ints("0,1,2"), help="Training seeds of the reported settings.")
    parser.add_argument("--val-products", type=int, help="Validation products evaluated [default: all].")
    parser.add_argument("--val-images", type=int, default=2, help="Images per validation product (>= 2: seed diversity).")
    parser.add_argument("--test-images", type=int, default=5, help="Images per test product: one loop request's attempts.")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.5, help="The judge's p(Available) that passes an image.")
    parser.add_argument("--draws", type=int, default=2000, help="Bootstrap resamples of the products.")
    parser.add_argument("--shard", type=_shard, default=(0, 1),
                        help="I/N: this process's share of the training runs (the base to shard 0); the part is "
                             "saved by the process that finds every evaluation made.")
    parser.add_argument("--threads", type=int, help="torch threads [default: torch's].")
    recipe = Recipe()
    for field, value in vars(recipe).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.recipe = Recipe(**{field: getattr(args, field) for field in vars(Recipe())})
    args.regs = [reg for reg in args.regs.split(",") if reg]
    unknown = sorted(set(args.regs) - set(REGULARISERS))
    if unknown:
        raise SystemExit(f"--regs: unknown {', '.join(unknown)}; expected any of {', '.join(REGULARISERS)}")
    if args.val_images < 2:
        raise SystemExit(f"--val-images {args.val_images}: diversity across seeds needs at least 2")
    if args.test_images < args.max_attempts:
        raise SystemExit(f"--test-images {args.test_images}: the loop's {args.max_attempts} attempts need as many")
    if args.world is None:
        from rfad.miniworld import world_dir

        args.world = world_dir()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rfad.logs import quiet_third_party

    quiet_third_party()
    args.work.mkdir(parents=True, exist_ok=True)
    for part in [p for p in args.parts.split(",") if p]:
        if part not in PARTS:
            raise SystemExit(f"--parts: unknown part {part!r}; expected any of {', '.join(PARTS)}")
        if part != "report" and _done(args.work, part) is not None:
            print(f"{part}: {args.work / (part + '.json')} exists, skipped")
            continue
        start = time.perf_counter()
        result = globals()[f"part_{part}"](args)
        if result is None:
            print(f"{part}: this shard's share is done; the part is saved by the shard that finishes last")
            return
        _save(args.work / f"{part}.json", {**result, "seconds": round(time.perf_counter() - start, 1)})
        print(f"{part}: done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
