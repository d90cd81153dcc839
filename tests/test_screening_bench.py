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
