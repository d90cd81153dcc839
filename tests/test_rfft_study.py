"""RFFT's study under the protocol (benchmarks/studies/rfft): settings trained along one run, chosen on
validation, read once on test, every number recomputable from the per-image records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.studies.rfft import summary as tables
from benchmarks.studies.rfft.runs import Setting


def _evaluation(labels: dict[str, list[str]], p: dict[str, list[float]], distances: dict[str, tuple[float, float]]):
    """An evaluation as runs.evaluate writes it: per product, its images' labels and p(Available) in seed order."""
    records = [{"product": product, "seed": 100 * k + a, "oracle": label,
                "fidelity": {"wall": True, "table": None, "reference": None, "faithful": a == 0},
                "probabilities": {tables.JUDGE: [p[product][a]]}}
               for k, (product, items) in enumerate(labels.items()) for a, label in enumerate(items)]
    products = [{"product": product, "seed_distance": seed, "cross_distance": cross}
                for product, (seed, cross) in distances.items()]
    return {"records": records, "products": products}


A, S = "Available", "Space Mismatch"
BASE = _evaluation({"p1": [S, A, S], "p2": [S, S, S]}, {"p1": [0.2, 0.9, 0.1], "p2": [0.3, 0.4, 0.6]},
                   {"p1": (0.2, 0.3), "p2": (0.1, 0.3)})


def test_a_group_reads_availability_fidelity_and_the_loop_off_the_records():
    group = tables.Group([BASE], ["p1", "p2"], threshold=0.5, max_attempts=3)
    stats = {name: statistic(np.arange(2)) for name, statistic in group.statistics().items()}
    assert stats["oracle_available"] == pytest.approx(1 / 6) and stats[f"share {S}"] == pytest.approx(5 / 6)
    assert stats["judge_available"] == pytest.approx(2 / 6) and stats["prompt_fidelity"] == pytest.approx(2 / 6)
    assert stats["seed_distance"] == pytest.approx(0.15) and stats["cross_distance"] == pytest.approx(0.3)
    # p1: RFNet passes attempt 2 (Available); p2: attempt 3 passes (Space Mismatch).
    assert stats["loop one_attempt"] == 0.0 and stats["loop judge_loop"] == 0.5
    assert stats["loop judge_attempts"] == 2.5 and stats["loop judge_exhausted"] == 0.0
    # The oracle as judge finds p1's Available image; p2 has none: counted max_attempts + 1.
    assert stats["loop oracle_loop"] == 0.5 and stats["loop to_oracle"] == pytest.approx((2 + 4) / 2)
    assert stats["judge_auc"] == pytest.approx(1.0)  # the one Available image has the highest p


def test_a_tuned_group_is_compared_to_the_base_on_the_same_resamples():
    tuned = _evaluation({"p1": [A, A, S], "p2": [S, A, S]}, {"p1": [0.8, 0.9, 0.1], "p2": [0.3, 0.7, 0.6]},
                        {"p1": (0.1, 0.15), "p2": (0.05, 0.15)})
    products = ["p1", "p2"]
    base = tables.Group([BASE], products, 0.5, 3)
    summary = tables.summarize(tables.Group([tuned, tuned], products, 0.5, 3), base, products, draws=200)
    assert summary["oracle_available vs base"]["difference"] == pytest.approx(3 / 6 - 1 / 6)
    assert summary["seed_distance vs base"]["value"] == pytest.approx(0.5)
    # Every resample halves both kinds of distance: the paired ratio has no spread at all.
    assert summary["cross_distance vs base"]["interval"] == pytest.approx([0.5, 0.5])
    guards = tables.meets_guards(summary)
    assert guards == {"seed diversity": False, "cross-product diversity": False, "prompt fidelity": True}
    same = tables.summarize(base, base, products, draws=50)
    assert same["oracle_available vs base"]["difference"] == 0.0 and same["seed_distance vs base"]["value"] == 1.0


def test_the_choice_takes_the_most_available_setting_that_keeps_diversity_and_fidelity():
    def entry(available, seed, cross, fidelity):
        return {"oracle_available": {"value": available}, "seed_distance vs base": {"value": seed},
                "cross_distance vs base": {"value": cross}, "prompt_fidelity vs base": {"difference": fidelity}}

    summaries = {"cc-lr0.001-beta1-steps150": entry(0.6, 0.5, 0.9, 0.0),    # most available, collapsed
                 "cc-lr0.001-beta3-steps150": entry(0.5, 0.9, 0.9, -0.02),
                 "cc-lr0.0003-beta3-steps50": entry(0.45, 0.95, 0.95, 0.0),
                 "kl-lr0.001-beta1-steps150": entry(0.55, 0.5, 0.5, -0.2)}
    chosen = tables.choose(summaries, ("cc", "kl"))
    assert chosen["cc"]["setting"] == "cc-lr0.001-beta3-steps150" and chosen["cc"]["eligible"] == 2
    assert chosen["kl"] == {"setting": "kl-lr0.001-beta1-steps150", "kept_diversity_and_fidelity": False,
                            "candidates": 1, "eligible": 0}


def test_a_setting_s_name_round_trips_and_names_its_run():
    setting = Setting("cc", 3e-4, 0.3, 150)
    assert Setting.parse(setting.name) == setting and setting.run(2) == "cc-lr0.0003-beta0.3-seed2"
    assert Setting("none", 1e-3, 1.0, 50).name == "none-lr0.001-steps50"  # no beta without a regulariser
    assert Setting.parse("none-lr0.001-steps50") == Setting("none", 1e-3, 1.0, 50)


@pytest.mark.slow
def test_the_study_sweeps_on_validation_then_reads_test_once(tmp_path):
    """On the shipped world and 15 drawn requests (5 per split): settings trained along one run per seed,
    the choice from validation, the test part refused before it, RFFT fed the training products only."""
    from benchmarks.studies.rfft.report import draw_figure, sweep_block, test_block
    from benchmarks.studies.rfft.rfft_study import main
    from rfad.trainer.api import write_scene_dataset

    manifest = write_scene_dataset(tmp_path / "data", 15, seed=4, val_fraction=0.2, test_fraction=0.2)
    work = tmp_path / "work"
    flags = ["--work", str(work), "--data", str(manifest), "--regs", "cc,none", "--lrs", "1e-3", "--betas", "1",
             "--steps-grid", "1,2", "--seeds", "0,1", "--val-images", "2", "--test-images", "2", "--max-attempts", "2",
             "--ddim-steps", "2", "--last-k", "1", "--batch-size", "1", "--grad-accum", "1", "--draws", "50",
             "--threads", "1"]
    with pytest.raises(SystemExit, match="run the choose part first"):
        main(flags + ["--parts", "final"])
    # Two processes: shard 1 takes the second task (cc's run), shard 0 the base and none's run, and the
    # shard that finds every evaluation made saves the part.
    main(flags + ["--parts", "sweep,choose", "--shard", "1/2"])
    assert not (work / "sweep.json").exists()
    assert sorted(p.name for p in (work / "evals").iterdir()) == ["cc-lr0.001-beta1-steps1-seed0-val.json",
                                                                  "cc-lr0.001-beta1-steps2-seed0-val.json"]
    main(flags + ["--parts", "sweep,choose", "--shard", "0/2"])
    assert (work / "choose.json").is_file()
    assert not list((work / "evals").glob("*-test.json"))  # nothing of test read before the choice
    main(flags + ["--parts", "final"])

    sweep, choose, final = (json.loads((work / f"{part}.json").read_text()) for part in ("sweep", "choose", "final"))
    assert sweep["settings"] == ["cc-lr0.001-beta1-steps1", "cc-lr0.001-beta1-steps2", "none-lr0.001-steps1",
                                 "none-lr0.001-steps2"]
    cc = Setting.parse(choose["chosen"]["cc"]["setting"])
    assert choose["chosen"]["none"]["setting"] == Setting("none", cc.lr, 1.0, cc.steps).name
    # One training run per (setting without steps, seed); RFFT read the 5 training rows only.
    runs = sorted(p.name for p in (work / "runs").iterdir())
    assert runs == ["cc-lr0.001-beta1-seed0", "cc-lr0.001-beta1-seed1", "none-lr0.001-seed0", "none-lr0.001-seed1"]
    record = json.loads((work / "controlnets" / "cc-lr0.001-beta1-steps2-seed0" / "rfft_config.json").read_text())
    assert record["rows"] == 5 and record["final_step"] == 2 and record["config"]["split"] == "train"
    assert record["models"]["canvas"]["width"] == 128  # the world's declared canvas, recorded as rfad-models.json has it

    test = final["test"]
    none = choose["chosen"]["none"]["setting"]
    assert test["products"] == 5 and set(test["summaries"]) == {"base", cc.name, none}
    # none against cc, paired: the regulariser's effect with all else equal.
    assert set(test["comparisons"]) == {f"{none} vs {cc.name}"}
    assert set(test["comparisons"][f"{none} vs {cc.name}"]) == set(tables.RATIOS) | set(tables.DIFFERENCES)
    # The tuned row's availability is the seeds' mean, recomputed from the kept records.
    shares = []
    for seed in (0, 1):
        records = json.loads((work / "evals" / f"{cc.name}-seed{seed}-test.json").read_text())["records"]
        assert len(records) == 5 * 2 and {r["seed"] % 1000 for r in records} == {0, 1}
        shares.append(np.mean([r["oracle"] == "Available" for r in records]))
    assert test["summaries"][cc.name]["oracle_available"]["value"] == pytest.approx(np.mean(shares))

    # An evaluation kept under other settings is refused, not silently reused.
    (work / "final.json").rename(work / "final.kept.json")
    with pytest.raises(SystemExit, match="evaluated with another recipe"):
        main(flags + ["--ddim-steps", "3", "--parts", "final"])  # argparse: the last --ddim-steps wins
    result = {"settings": {"max_attempts": 2}, "rows": [{"part": "sweep", **sweep}, {"part": "choose", **choose},
                                                         {"part": "final", **final}]}
    assert "(chosen)" in sweep_block(result) and "up to 2, RFNet" in test_block(result)
    assert f"`{none} vs {cc.name}`, paired" in test_block(result)
    draw_figure(choose, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
