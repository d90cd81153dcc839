"""A catalog run at fleet scale: shards of ``rfad-client batch`` that resume, and the merge of their outputs.

A nightly run over millions of products is N shard processes (a Kubernetes Indexed Job:
``rfad-export k8s`` writes it), each ``rfad-client batch --shard i/N`` against the serving
fleet. A job belongs to shard ``sha256(id) mod N``: every process reads the same jobs file and
takes its own share, with no coordinator and no share lost or doubled. A shard's
``OUT/results.jsonl`` is appended as each job finishes, so a shard that was killed (a pod
evicted, a node lost) resumes from it: a job already answered (``status: done``) is skipped, a
failed one runs again. ``rfad-client merge`` then writes one ``results.jsonl`` with every job
once (the last record of each, images referenced where its shard wrote them) and says which
jobs are missing or failed.

Torch-free and gRPC-free (the files only), like the rest of the client's bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import click

RESULTS_FILE = "results.jsonl"


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/16"`` -> (3, 16); a ValueError naming ``--shard`` unless 0 <= i < N."""
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"--shard: {text!r} is not i/N with 0 <= i < N (e.g. 0/16)")
    return shard


def shard_of(job_id: str, count: int) -> int:
    """The shard (0..count-1) job ``job_id`` belongs to: sha256 of the id, so every process agrees
    without coordination, whatever the order of the jobs file."""
    return int.from_bytes(hashlib.sha256(job_id.encode("utf-8")).digest()[:8], "big") % count


def in_shard(jobs: Iterable[dict], shard: tuple[int, int] | None) -> list[dict]:
    """The jobs of ``shard`` (None: all of them)."""
    if shard is None:
        return list(jobs)
    index, count = shard
    return [job for job in jobs if shard_of(job["id"], count) == index]


def read_results(path: Path, repair: bool = False) -> dict[str, dict]:
    """The last record of each job id in a results file (a resumed job's later record wins).

    A process killed while writing leaves a last line without its newline: it is ignored, and with
    ``repair`` cut off the file (so that appending continues on a clean line). Any other line that
    is not a JSON record is a ClickException naming the line.
    """
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if repair and complete < len(data):
        with open(path, "r+b") as file:
            file.truncate(complete)
    records = {}
    for number, line in enumerate(data[:complete].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[str(record["id"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            raise click.ClickException(f"{path}:{number}: not a result record") from None
    return records


def merge_results(shard_dirs: list[Path], out: Path, job_ids: list[str] | None = None) -> dict:
    """Merge the ``results.jsonl`` of ``shard_dirs`` into ``out/results.jsonl`` (one record per job,
    in ``job_ids`` order when given, else by id; image paths made relative to ``out``) and return
    the counts: ``jobs``, ``done``, ``failed``, ``missing`` (ids of ``job_ids`` without a record).
    A job answered in two shards is a ClickException (the shards were not of one --shard i/N split)."""
    merged: dict[str, dict] = {}
    owner: dict[str, Path] = {}
    for folder in shard_dirs:
        results = folder / RESULTS_FILE
        if not results.is_file():
            raise click.ClickException(f"{folder}: no {RESULTS_FILE} (not an rfad-client batch output folder)")
        for job_id, record in read_results(results).items():
            if job_id in owner:
                raise click.ClickException(f"job {job_id!r} is in both {owner[job_id]} and {folder}: "
                                           "merge the shards of one --shard i/N split")
            owner[job_id] = folder
            images = [os.path.relpath(folder / image, out) for image in record.get("images", [])]
            merged[job_id] = {**record, **({"images": images} if "images" in record else {})}
    order = job_ids if job_ids is not None else sorted(merged)
    extra = sorted(set(merged) - set(order))
    if extra:
        raise click.ClickException(f"{len(extra)} answered job(s) are not in the jobs file, e.g. {extra[0]!r}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RESULTS_FILE, "w", encoding="utf-8") as file:
        for job_id in order:
            if job_id in merged:
                file.write(json.dumps(merged[job_id]) + "\n")
    done = sum(merged[j]["status"] == "done" for j in order if j in merged)
    missing = [job_id for job_id in order if job_id not in merged]
    return {"jobs": len(order), "done": done, "failed": sum(j in merged for j in order) - done, "missing": missing}
