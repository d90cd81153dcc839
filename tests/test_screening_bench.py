"""benchmarks/studies/screening/screening_bench.py end to end on the shipped miniature world, at tiny settings: every
part runs (in process and served through Triton), the tables and per-record files are written, and
a finished part is not run again."""

from __future__ import annotations

import json

import pytest


def _bench():
    from benchmarks.studies.screening import screening_bench

    return screening_bench


@pytest.mark.slow
def test_the_screening_bench_runs_every_part_and_resumes(tmp_path, capsys):
    bench = _bench()
    work, out = tmp_path / "work", tmp_path / "results" / "screening.json"
    tiny = ["--work", str(work), "--out", str(out), "--val-products", "1", "--test-products", "1", "--seeds", "2",
            "--requests", "1", "--steps", "4", "--max-attempts", "2", "--auc-fractions", "0.25,0.5",
            "--grid-at", "0.5", "--grid-thresholds", "0.3,1.0", "--bootstrap", "20", "--threads", "1"]
    bench.main(tiny)
    result = json.loads(out.read_text())
    # AUC by step (steps 1 and 2 of 4) and of the final image, per split, for RFNet.
    assert set(result["auc"]) == {"val", "test"} and set(result["auc"]["test"]["rfnet"]) == {"1", "2", "final"}
    # The grid was read on validation products; a threshold of 1.0 screens every candidate it may.
    validation = result["validation"]
    assert set(validation) == {"baseline", "screen@0.5<0.3", "screen@0.5<1"}
    assert validation["screen@0.5<1"]["screened_per_request"] > 0 and validation["baseline"]["screened_per_request"] == 0
    chosen = result["chosen"]
    assert chosen["screen_at"] == 0.5 and chosen["screen_threshold"] in (0.3, 1.0)
    for path in ("inprocess", "served"):
        arms = result[path]["arms"]
        assert set(arms) == {"baseline", f"screen@0.5<{chosen['screen_threshold']:g}"}
        for arm in arms.values():
            assert arm["requests"] == 1 and arm["cpu_s_per_request"] > 0
            assert arm["candidate_steps_per_request"] >= 4
            assert arm["time_to_first_available_s"]["requests"] == 1
        assert "available_per_cpu_s_ratio" in next(iter(result[path]["comparison"].values()))
    # The same requests in process and served: the same attempts and screening, step for step.
    records = [json.loads(line) for line in out.with_suffix(".records.jsonl").read_text().splitlines()]
    by_part = {part: [r for r in records if r["part"] == part] for part in ("auc", "choose", "inprocess", "served")}
    assert len(by_part["auc"]) == 4 and all("p_by_step" in r for r in by_part["auc"])
    local = {(r["arm"], r["seed"]): r for r in by_part["inprocess"]}
    for served in by_part["served"]:
        ours = local[(served["arm"], served["seed"])]
        assert (served["attempts"], served["candidate_steps"]) == (ours["attempts"], ours["candidate_steps"])
        assert [s["seed"] for s in served["screened"]] == [s["seed"] for s in ours["screened"]]
    table = out.with_suffix(".md").read_text()
    assert "| served | baseline |" in table and "Chosen on the validation products" in table

    capsys.readouterr()
    bench.main(tiny)  # every part's result exists: nothing runs again, the report is rewritten
    printed = capsys.readouterr().out
    assert all(f"{part}: {work / (part + '.json')} exists, skipped" in printed
               for part in ("auc", "choose", "inprocess", "served"))
    assert json.loads(out.read_text())["chosen"] == chosen


def test_a_second_judges_auc_is_compared_with_rfnets_on_the_same_previews():
    from benchmarks.studies.screening.stats import auc
    from benchmarks.studies.screening.summary import auc_table

    records = []
    for product in range(6):
        for seed in range(4):
            available = (product + seed) % 2 == 0
            p_rfnet = 0.5 + (0.1 if available else -0.1) * (1 if seed < 3 else -1)  # ranks 3 of 4 right
            p_screen = 0.7 if available else 0.3  # ranks every one right
            records.append({"split": "test", "product": str(product), "oracle": "Available" if available else "x",
                            "p_by_step": {"rfnet": {"5": p_rfnet}, "screen_rfnet": {"5": p_screen}},
                            "p_final": p_rfnet})
    table = auc_table({"steps": [5], "judges": ["rfnet", "screen_rfnet"], "records": records}, rounds=200)["test"]
    positives = [r["oracle"] == "Available" for r in records]
    expected = auc([r["p_by_step"]["screen_rfnet"]["5"] for r in records], positives) - auc(
        [r["p_by_step"]["rfnet"]["5"] for r in records], positives)
    difference = table["screen_rfnet - rfnet"]["5"]
    assert difference["value"] == pytest.approx(expected) and expected > 0
    assert difference["low"] <= difference["value"] <= difference["high"] and difference["products"] == 6
    assert table["screen_rfnet"]["5"]["value"] == pytest.approx(1.0)


def test_the_report_records_how_the_screening_rfnet_was_made(tmp_path):
    from benchmarks.studies.screening.screening_bench import _training_record

    data, rfnet = tmp_path / "previews", tmp_path / "screen"
    data.mkdir(), rfnet.mkdir()
    assert _training_record(rfnet) is None  # a folder without a training log: nothing to record
    (data / "summary.json").write_text(json.dumps({
        "images": 8, "labels": {"Available": 3}, "splits": {"train": {"images": 6, "products": 3},
                                                          "val": {"images": 2, "products": 1}},
        "settings": {"screen_step": 5, "steps": 20, "world_products": 300}}))
    (rfnet / "train_log.json").write_text(json.dumps({
        "config": {"init": "judge/rfnet", "data": str(data), "epochs": 6, "lr": 1e-4, "lr_step_epoch": 3,
                   "batch_size": 16, "image_size": 128, "seed": 0, "tiny": True},
        "history": [{"epoch": 1, "val_accuracy": 0.4}, {"epoch": 2, "val_accuracy": 0.5}]}))
    record = _training_record(rfnet)
    assert record["config"]["lr"] == 1e-4 and record["config"]["init"] == "judge/rfnet" and "tiny" not in record["config"]
    assert record["last_epoch"] == {"epoch": 2, "val_accuracy": 0.5}
    assert record["previews"]["splits"]["train"] == {"images": 6, "products": 3}
    assert (record["previews"]["screen_step"], record["previews"]["world_products"]) == (5, 300)
