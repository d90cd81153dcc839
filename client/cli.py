"""``rfad-client``: generate ad images on a running rfad server, in batches, judge images, or check its health.

Every failure is one line on stderr and exit code 1. The numeric options come from the request
contract (``rfad.contract.SETTINGS_INPUTS``), so a new setting appears here without an edit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import click

from rfad.client import AsyncRfadClient, RfadClient, RfadClientError
from rfad.client.catalog import RESULTS_FILE, in_shard, merge_results, parse_shard, read_results
from rfad.client.jsonl import beside, jsonl_objects
from rfad.client.options import security_options, url_option
from rfad.contract import MAX_REQUEST_ID_LENGTH, PIPELINE_INPUTS, SETTINGS_INPUTS

_SETTING_SPECS = {spec.name: spec for spec in PIPELINE_INPUTS if spec.name in SETTINGS_INPUTS}
# Fields a batch job line may have besides the settings.
_JOB_TEXT_FIELDS = ("prompt", "caption", "negative_prompt")
_JOB_FIELDS = {"id", "product", "deadline_s", *_JOB_TEXT_FIELDS, *SETTINGS_INPUTS}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(error: Exception) -> click.ClickException:
    status = getattr(error, "status", "")
    return click.ClickException(_one_line(f"{status}: {error}" if status else str(error)))


def settings_options(command):
    """Add one ``--<setting>`` option per contract setting (int for INT inputs, float for FP32)."""
    for name in reversed(SETTINGS_INPUTS):
        spec = _SETTING_SPECS[name]
        command = click.option(f"--{name.replace('_', '-')}", name, type=int if spec.datatype.startswith("INT")
                               else float, default=None, help=f"{spec.doc}.")(command)
    return command


def connection_options(command):
    """``--url``, ``--retries``, ``--backoff`` and the security options, shared by generate and batch."""
    command = security_options(command)
    command = click.option("--backoff", "backoff_s", default=0.5, show_default=True, type=float,
                           help="First wait before retrying an unavailable server (doubles each retry).")(command)
    command = click.option("--retries", default=3, show_default=True, type=click.IntRange(0),
                           help="Retries while the server is UNAVAILABLE (never for rejected requests).")(command)
    return url_option(command)


@click.group()
def main() -> None:
    """Talk to an rfad Triton server (the rfad_pipeline model) over gRPC."""
    # gRPC's core logs a failed TLS handshake on a line of its own (at INFO), before the command's
    # one-line error says the same; set before gRPC loads. A GRPC_VERBOSITY of the user's wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@main.command()
@connection_options
@click.option("--product", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Product cut-out: PNG/WebP with alpha.")
@click.option("--prompt", required=True, help="Background prompt.")
@click.option("--caption", default="", help="Product title, for the RFNet judge.")
@click.option("--negative-prompt", default="")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for image-N.png and result.json.")
@settings_options
@click.option("--deadline", "deadline_s", type=float, default=600.0, show_default=True,
              help="Seconds before the request (retries included) is abandoned.")
def generate(url, retries, backoff_s, security, product, prompt, caption, negative_prompt, out, deadline_s,
             **settings) -> None:
    """Generate ad images for one product; writes OUT/image-N.png and OUT/result.json."""
    try:
        with RfadClient(url, retries=retries, backoff_s=backoff_s, **security) as client:
            result = client.generate(product, prompt, caption=caption, negative_prompt=negative_prompt,
                                     deadline_s=deadline_s, **settings)
    except RfadClientError as exc:
        raise _fail(exc) from None
    request = {"product": str(product), "prompt": prompt, "caption": caption, "negative_prompt": negative_prompt,
               **{k: v for k, v in settings.items() if v is not None}}
    try:
        paths = result.save(out)
        (out / "result.json").write_text(json.dumps({"images": [p.name for p in paths], **result.summary(),
                                                     "request": request}, indent=2) + "\n")
    except OSError as exc:
        raise _fail(exc) from None
    best = "" if result.best_index is None else f"; best {paths[result.best_index].name}"
    screened = f"; {len(result.screened_seeds)} candidate(s) screened out" if result.screened_seeds else ""
    click.echo(f"{len(paths)} image(s) in {out}: {sum(result.available)} available{best}; "
               f"{result.attempts} attempt(s){screened}; {result.latency_s:.2f} s")


def read_jobs(path: Path) -> list[dict]:
    """The jobs of a JSONL file, one JSON object per non-empty line, checked before anything is sent.

    Each job needs ``product`` (a path, relative paths taken from the jobs file's folder) and
    ``prompt``; it may have ``id`` (default: its line number; also the request id the server logs),
    ``caption``, ``negative_prompt``, ``deadline_s`` and any contract setting. Raises
    :class:`click.ClickException` naming the line.
    """
    jobs, seen = [], set()
    for number, where, job in jsonl_objects(path, _JOB_FIELDS):
        for required in ("product", "prompt"):
            if required not in job:
                raise click.ClickException(f"{where}: missing {required!r}")
        job_id = str(job.get("id", f"{number:05d}"))
        if not job_id or "/" in job_id or job_id in (".", ".."):
            raise click.ClickException(f"{where}: id {job_id!r} cannot name a folder")
        if len(job_id) > MAX_REQUEST_ID_LENGTH or not job_id.isprintable():
            raise click.ClickException(f"{where}: id {job_id!r} must be at most {MAX_REQUEST_ID_LENGTH} printable "
                                       "characters (it is the request id)")
        if job_id in seen:
            raise click.ClickException(f"{where}: duplicate id {job_id!r}")
        seen.add(job_id)
        jobs.append({**job, "id": job_id, "product": beside(path, job["product"])})
    if not jobs:
        raise click.ClickException(f"{path}: no jobs")
    return jobs


async def _run_batch(jobs: list[dict], client: AsyncRfadClient, out: Path, concurrency: int, deadline_s: float,
                     progress: bool) -> list[dict]:
    """Run ``jobs`` with ``concurrency`` requests in flight, each under its job id as request id;
    append one record per job to OUT/results.jsonl."""
    from tqdm import tqdm

    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    records = []
    results_file = open(out / RESULTS_FILE, "a", encoding="utf-8")
    bar = tqdm(total=len(jobs), unit="job", desc="rfad batch", disable=not progress, file=sys.stderr)

    async def worker() -> None:
        while True:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record = {"id": job["id"], "status": "done", "error": None}
            try:
                result = await client.generate(
                    job["product"], job["prompt"], **{k: job[k] for k in ("caption", "negative_prompt") if k in job},
                    deadline_s=job.get("deadline_s", deadline_s), request_id=job["id"],
                    **{k: job[k] for k in SETTINGS_INPUTS if k in job})
            except RfadClientError as exc:
                record.update(status="failed", request_id=exc.request_id,
                              error={"type": type(exc).__name__, "status": exc.status, "local": exc.local,
                                     "message": str(exc)})
            else:
                paths = result.save(out / job["id"])
                record.update(images=[str(p.relative_to(out)) for p in paths], **result.summary())
            records.append(record)
            # Written as each job finishes, so an interrupted batch keeps what it has done.
            results_file.write(json.dumps(record) + "\n")
            results_file.flush()
            bar.update(1)
            bar.set_postfix(failed=sum(r["status"] == "failed" for r in records), refresh=False)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)))))
    finally:
        bar.close()
        results_file.close()
    return records


async def _checked_batch(jobs: list[dict], client: AsyncRfadClient, out: Path, concurrency: int,
                         deadline_s: float, progress: bool) -> list[dict]:
    """:func:`_run_batch` after a health check: an unreachable server is one error, not N failed jobs."""
    try:
        state = await client.health()
        states = state.get("endpoints", {client.url: state})
        if not any(s["model_ready"] for s in states.values()):
            raise click.ClickException(_one_line(f"{client.url} is not ready: {state['error']}"))
        for endpoint, endpoint_state in states.items():  # the others join once a health check passes
            if not endpoint_state["model_ready"]:
                client.endpoints.failed(endpoint, f"not ready at the start: {endpoint_state['error']}", counted=False)
        return await _run_batch(jobs, client, out, concurrency, deadline_s, progress)
    finally:
        await client.close()


def batch_summary(records: list[dict], seconds: float, endpoints: dict[str, dict]) -> dict:
    """Counts of a finished batch: done, failed by status, retried (sent more than once),
    attempts histogram, images and available images, and per endpoint the requests it answered
    and the UNAVAILABLE and INTERNAL ones."""
    done = [r for r in records if r["status"] == "done"]
    failed = Counter((r["error"]["status"] or r["error"]["type"]) for r in records if r["status"] == "failed")
    attempts = Counter(r["attempts"] for r in done)
    return {"jobs": len(records), "done": len(done), "failed": sum(failed.values()),
            "failed_by_reason": dict(failed.most_common()), "retried": sum(r.get("tries", 1) > 1 for r in done),
            "attempts_histogram": {str(k): attempts[k] for k in sorted(attempts)},
            "images": sum(len(r["images"]) for r in done), "available": sum(sum(r["available"]) for r in done),
            "seconds": round(seconds, 3), "endpoints": endpoints}


_BATCH_HELP = f"""Run every job of a JSONL file, CONCURRENCY at a time; exit code 1 if any job failed
(OUT/results.jsonl says why, one record per job; each job's id is its request id in the server's log).

\b
Job fields: product and prompt (required), id, caption, negative_prompt, deadline_s,
{", ".join(SETTINGS_INPUTS)}.
Relative product paths are taken from the jobs file's folder.

\b
A catalog at fleet scale: N processes, each with --shard i/N, take their share of the same jobs
file; a run resumes from its own OUT/results.jsonl (jobs already done are skipped, failed ones run
again), and `rfad-client merge` joins the shards' outputs."""


def _shard(_ctx, _param, value: str | None) -> tuple[int, int] | None:
    try:
        return None if value is None else parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--shard: ")) from None


@main.command(help=_BATCH_HELP)
@connection_options
@click.option("--input", "jobs_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL, one job per line: {\"product\": \"p.png\", \"prompt\": \"...\", \"seed\": 3, ...}.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for OUT/<id>/image-N.png, OUT/results.jsonl and OUT/summary.json.")
@click.option("--shard", callback=_shard, metavar="I/N",
              help="Run only shard I of N (0 <= I < N): the jobs whose id hashes to I (rfad.client.catalog).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Requests in flight at once.")
@click.option("--deadline", "deadline_s", type=float, default=600.0, show_default=True,
              help="Per-job deadline in seconds (a job's own deadline_s wins).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
def batch(url, retries, backoff_s, security, jobs_file, out, shard, concurrency, deadline_s, progress) -> None:
    jobs = in_shard(read_jobs(jobs_file), shard)
    try:
        out.mkdir(parents=True, exist_ok=True)
        previous = {k: r for k, r in read_results(out / RESULTS_FILE, repair=True).items()
                    if k in {job["id"] for job in jobs}}
    except OSError as exc:
        raise _fail(exc) from None
    todo = [job for job in jobs if previous.get(job["id"], {}).get("status") != "done"]
    if previous:
        click.echo(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} job(s) already done in {out / RESULTS_FILE}")
    client = AsyncRfadClient(url, retries=retries, backoff_s=backoff_s, **security)
    started = time.monotonic()
    try:
        records = asyncio.run(_checked_batch(todo, client, out, concurrency, deadline_s, progress)) if todo else []
    except OSError as exc:  # the output folder cannot be written: one line, not a traceback per worker
        raise _fail(exc) from None
    records = list({**previous, **{r["id"]: r for r in records}}.values())
    summary = batch_summary(records, time.monotonic() - started, client.endpoints.summary())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["failed_by_reason"].items())
    click.echo(f"{summary['jobs']} job(s) in {summary['seconds']:.1f} s: {summary['done']} done, "
               f"{summary['failed']} failed" + (f" ({reasons})" if reasons else "")
               + (f", {summary['retried']} after a retry" if summary["retried"] else ""))
    histogram = ", ".join(f"{k}: {v}" for k, v in summary["attempts_histogram"].items())
    click.echo(f"attempts (attempts: jobs): {histogram or 'none'}; images {summary['images']}, "
               f"available {summary['available']}; results in {out / RESULTS_FILE}")
    for endpoint, counts in summary["endpoints"].items():
        if counts["unavailable"] or counts["internal"]:
            click.echo(_one_line(f"endpoint {endpoint} failed: {counts['unavailable']} request(s) UNAVAILABLE, "
                                 f"{counts['internal']} INTERNAL, {counts['requests']} answered; "
                                 f"last error: {counts['last_error']}"))
        elif counts["last_error"]:
            click.echo(_one_line(f"endpoint {endpoint} was not used: {counts['last_error']}"))
    if summary["failed"]:
        sys.exit(1)


@main.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--input", "jobs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The jobs file the shards ran: every job must be answered once (missing ones are named).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the merged OUT/results.jsonl and OUT/summary.json (images stay in the shards).")
def merge(shards, jobs_file, out) -> None:
    """Merge the output folders of `rfad-client batch --shard i/N` runs: one record per job; exit code
    1 if a job failed or (with --input) has no record."""
    job_ids = [job["id"] for job in read_jobs(jobs_file)] if jobs_file else None
    counts = merge_results(list(shards), out, job_ids)
    (out / "summary.json").write_text(json.dumps(counts, indent=2) + "\n")
    missing = counts["missing"]
    click.echo(f"{counts['jobs']} job(s) from {len(shards)} shard(s): {counts['done']} done, {counts['failed']} failed"
               + (f", {len(missing)} missing (e.g. {missing[0]!r})" if missing else "")
               + f"; results in {out / RESULTS_FILE}")
    if counts["failed"] or missing:
        sys.exit(1)


@main.command()
@url_option
@security_options
@click.option("--wait", "wait_s", default=0.0, show_default=True, type=float,
              help="Wait up to this many seconds for the server to become ready.")
def health(url, security, wait_s) -> None:
    """Exit 0 if the server (every server of --url) is ready and serves rfad_pipeline, else print why and exit 1."""
    with RfadClient(url, retries=0, **security) as client:
        if wait_s > 0:
            try:
                client.wait_until_ready(wait_s)
            except RfadClientError as exc:
                raise _fail(exc) from None
        state = client.health()
    if not state["model_ready"]:
        raise click.ClickException(_one_line(f"{url} is not ready: {state['error']}"))
    click.echo(f"{url} ready: Triton {state['server_version']}, model {state['model']} ready")


from rfad.client.judge_cli import judge  # noqa: E402 - registered on the group above

main.add_command(judge)

if __name__ == "__main__":
    main()
