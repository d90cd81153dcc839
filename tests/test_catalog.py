"""The catalog bookkeeping of `rfad-client batch --shard` and `rfad-client merge`, on files: shards
partition the jobs, a results file cut mid-line by a kill is repaired, and the merge keeps the
last record of each job and refuses a job answered by two shards. (The same on a real server,
with a shard killed mid-run: tests/test_fleet.py.)"""

from __future__ import annotations

import json

import click
import pytest

from rfad.client.catalog import in_shard, merge_results, parse_shard, read_results, shard_of


def test_shards_partition_the_jobs_whatever_their_order():
    jobs = [{"id": f"sku-{i}"} for i in range(200)]
    shares = [in_shard(jobs, (i, 7)) for i in range(7)]
    assert sorted(job["id"] for share in shares for job in share) == sorted(job["id"] for job in jobs)
    assert all(10 < len(share) < 50 for share in shares)  # a hash spreads them
    assert in_shard(list(reversed(jobs)), (3, 7)) == list(reversed(shares[3]))
    assert shard_of("sku-1", 7) == shard_of("sku-1", 7) and in_shard(jobs, None) == jobs


@pytest.mark.parametrize("text", ["3", "3/3", "-1/4", "a/4", "1/0"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="--shard: .* is not i/N"):
        parse_shard(text)


def test_a_results_file_cut_by_a_kill_is_repaired_and_the_last_record_wins(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a", "status": "failed"}) + "\n" + json.dumps({"id": "b", "status": "done"})
                    + "\n" + json.dumps({"id": "a", "status": "done"}) + "\n" + '{"id": "c", "sta')
    assert {k: r["status"] for k, r in read_results(path).items()} == {"a": "done", "b": "done"}
    assert path.read_text().endswith('"c", "sta')  # read only: untouched
    read_results(path, repair=True)
    assert path.read_text().endswith('"done"}\n')  # appending continues on a clean line
    path.write_text("not json\n")
    with pytest.raises(click.ClickException, match="results.jsonl:1: not a result record"):
        read_results(path)


def test_merge_keeps_each_job_once_names_the_missing_and_refuses_a_job_in_two_shards(tmp_path):
    for shard, records in {"s0": [("a", "done"), ("c", "failed")], "s1": [("b", "failed"), ("b", "done")]}.items():
        (tmp_path / shard).mkdir()
        (tmp_path / shard / "results.jsonl").write_text("".join(
            json.dumps({"id": i, "status": s, **({"images": [f"{i}/image-0.png"]} if s == "done" else {})}) + "\n"
            for i, s in records))
    counts = merge_results([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged", ["a", "b", "c", "d"])
    assert counts == {"jobs": 4, "done": 2, "failed": 1, "missing": ["d"]}
    merged = [json.loads(line) for line in (tmp_path / "merged" / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in merged] == [("a", "done"), ("b", "done"), ("c", "failed")]
    assert merged[1]["images"] == ["../s1/b/image-0.png"]  # where its shard wrote it, seen from the merge
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "results.jsonl").write_text(json.dumps({"id": "a", "status": "done"}) + "\n")
    with pytest.raises(click.ClickException, match="job 'a' is in both"):
        merge_results([tmp_path / "s0", tmp_path / "s2"], tmp_path / "m2")
    with pytest.raises(click.ClickException, match="not in the jobs file"):
        merge_results([tmp_path / "s0"], tmp_path / "m3", ["a"])
