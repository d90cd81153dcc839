"""The serving-speed parts of the Performance section: targets, perf_analyzer beside rfad's client,
and where a served request's time goes. Rendered by ``report.py`` from ``pipeline.json`` (its
``summary``) and ``perf_analyzer.json``; every number comes from those files.
"""

from __future__ import annotations

from benchmarks.common import markdown_table


def _mark(met: bool) -> str:
    return "met" if met else "NOT met"


def targets_lines(pipeline: dict) -> list[str]:
    """The serving targets per shape, measured side by side in one run, each beside its target."""
    summary = pipeline.get("summary")
    if not summary:
        return []
    rows, misses = [], []
    for shape in sorted(summary, key=["tiny", "small"].index):
        s = summary[shape]
        ratio, ratio_target = s["served_over_in_process"], s["served_over_in_process_target"]
        overhead, overhead_target = s["overhead_ms_per_bls_call"], s["overhead_ms_per_bls_call_target"]
        throughput = s["served_over_in_process_throughput"]
        rows.append({
            "shape": shape,
            "ratio": f"{ratio:.3f} (<= {ratio_target}: {_mark(ratio <= ratio_target)})",
            "overhead": "not measured" if overhead is None else f"{overhead:.2f}" + (
                f" (<= {overhead_target}: {_mark(overhead <= overhead_target)})" if overhead_target is not None else ""),
            "throughput": f"{s['served_images_per_s_concurrent']:.3f} vs {s['in_process_images_per_s']:.3f} "
                          f"(>=: {_mark(throughput >= 1)})",
        })
        if ratio > ratio_target:
            misses.append(f"{shape}: served / in process is {ratio:.3f}, {(ratio / ratio_target - 1) * 100:.1f} % "
                          f"above its target {ratio_target}")
        if overhead_target is not None and (overhead is None or overhead > overhead_target):
            misses.append(f"{shape}: the BLS overhead per call was not measured" if overhead is None else
                          f"{shape}: {overhead:.2f} ms per BLS call, {overhead - overhead_target:.2f} ms above "
                          f"its target {overhead_target} ms")
        if throughput < 1:
            misses.append(f"{shape}: served throughput to {s['concurrent_clients']} clients is "
                          f"{(1 - throughput) * 100:.1f} % below the in-process loop's")
    first = summary[next(iter(summary))]
    lines = ["### Serving targets (measured side by side in the run above)", "",
             "Served attempt (judging through the default route, `" + pipeline["settings"].get("default_judge", "?")
             + "`) over the in-process attempt with its judge, medians of interleaved runs; serving overhead per BLS "
             "call, from the server's own metrics over the same requests of the `components` route (the "
             "pipeline's round trip per call, `rfad_bls_seconds_total`, minus Triton's queue + compute time of the "
             "called model, `nv_inference_request_duration_us`; weighted by calls); images/s served "
             f"to {first['concurrent_clients']} concurrent clients ({pipeline['settings'].get('pipeline_instances', 1)} "
             "rfad_pipeline instances) against the in-process loop, which serves one request after the other.", "",
             markdown_table(rows, [("shape", "shape"), ("ratio", "served / in process (target)"),
                                   ("overhead", "ms per BLS call (target)"),
                                   ("throughput", "images/s served vs in process (target)")]), ""]
    if misses:
        lines += ["Not reached in this run: " + "; ".join(misses) + ".", ""]
    faster = [shape for shape in summary if summary[shape]["served_over_in_process"] < 1]
    if faster:
        lines += [f"Served faster than in process at: {', '.join(faster)}. The served components run with their "
                  "chosen onnxruntime threads (`rfad.onnx_session.COMPONENT_THREADS`), the in-process runner with "
                  "onnxruntime's defaults, so the ratio also compares thread settings (and the runs' spread: min-max "
                  "above).", ""]
    return lines


def perf_analyzer_lines(result: dict, measured: str) -> list[str]:
    """perf_analyzer's figures beside rfad's client, and the server-side breakdown of the pipeline."""
    rows = result["rows"]
    if rows and "skipped" in rows[0]:
        return [f"Skipped in this run: {rows[0]['skipped']}"]
    shape = rows[0]
    lines = [measured,
             f"Served, {shape['shape']} shape: {shape['size']} px, {shape['steps']} steps; `rfad_pipeline`: one "
             "candidate, one attempt, threshold 0 (the request of the one-attempt table); "
             f"`rfad_judge`: {result['settings']['judge_images']} images per "
             "request. Same server, same request, same number of concurrent clients: perf_analyzer "
             "(gRPC, count windows) then `rfad.client`.", "",
             markdown_table(rows, [("model", "model"), ("concurrency", "clients"),
                                   ("pa_p50_ms", "perf_analyzer p50 ms"), ("pa_p99_ms", "p99 ms"),
                                   ("pa_requests_per_s", "requests/s"), ("rfad_p50_ms", "rfad.client p50 ms"),
                                   ("rfad_p99_ms", "p99 ms"), ("rfad_requests_per_s", "requests/s")]), ""]
    failed = [f"`{r['model']}` at {r['concurrency']} clients ({r['pa_failed'].split(': ', 1)[-1]})"
              for r in rows if "pa_failed" in r]
    if failed:
        lines += ["perf_analyzer gave no figures for: " + "; ".join(failed) + ".", ""]
    single = next((r for r in rows if r["model"] == "rfad_pipeline" and r["concurrency"] == 1 and "server" in r), None)
    if single is None:
        return lines
    pipeline_block = single["server"].get("", {})
    requests = pipeline_block.get("success_count") or 1
    breakdown = []
    for name, block in sorted(single["server"].items()):
        if not name or not block.get("success_count"):
            continue
        bls = single.get("bls", {}).get(name, {})
        breakdown.append({
            "model": name, "calls": block["success_count"] / requests,
            **{f"{part}_ms": block[f"{part}_us"] / 1000 for part in ("queue", "compute_input", "compute_infer",
                                                                       "compute_output") if f"{part}_us" in block},
            **{key: bls[key] for key in ("round_trip_ms", "bls_overhead_ms") if key in bls},
        })
    lines += ["Where one `rfad_pipeline` request's time goes at 1 client: perf_analyzer's server-side "
              "breakdown of every model the pipeline reaches (`perf_analyzer --bls-composing-models`; per call, ms), the "
              "pipeline's own round trip per BLS call (its `rfad_bls_seconds_total` metric) and what a call costs "
              "beyond Triton's own time of that model (`nv_inference_request_duration_us`). The whole request: "
              f"{pipeline_block.get('request_us', 0) / 1000:.1f} ms on the server.", "",
              markdown_table(breakdown, [("model", "model"), ("calls", "calls / request"), ("queue_ms", "queue"),
                                         ("compute_input_ms", "compute input"), ("compute_infer_ms", "compute infer"),
                                         ("compute_output_ms", "compute output"),
                                         ("round_trip_ms", "pipeline's round trip"),
                                         ("bls_overhead_ms", "BLS cost beyond the model")]), "",
              *_where_the_time_goes(single, pipeline_block, result["settings"])]
    return lines


def _where_the_time_goes(single: dict, pipeline_block: dict, settings: dict) -> list[str]:
    """One request's server time split: inside the models the pipeline calls by BLS (perf_analyzer's
    calls per request and request time of each, in its measurement window), the BLS cost per call
    (the pipeline's metrics), and the rest, the pipeline's own Python."""
    bls = single.get("bls", {})
    requests = pipeline_block.get("success_count")
    if not bls or not requests or "request_us" not in pipeline_block:
        return []
    total = pipeline_block["request_us"] / 1000
    blocks = {name: single["server"][name] for name in bls if single["server"].get(name, {}).get("success_count")}

    def per_request(key: str) -> float:  # ms per pipeline request, summed over the called models
        return sum(block["success_count"] / requests * block.get(key, 0) / 1000 for block in blocks.values())

    calls = sum(block["success_count"] for block in blocks.values()) / requests
    inside = per_request("request_us")
    moving = per_request("compute_input_us") + per_request("compute_output_us")
    cost = sum(block["success_count"] / requests * bls[name]["bls_overhead_ms"] for name, block in blocks.items())
    queued = per_request("queue_us")
    delay = settings.get("component_max_queue_delay_us")
    waiting = (f" ({settings.get('profile')} profile: a component's dynamic batcher holds a request up to {delay} us "
               "for a batch partner, which a request alone waits out)") if delay else ""
    return [f"Where the time goes (1 client): one request takes {total:.1f} ms on the server; {inside:.1f} ms of it "
            f"inside the models it calls ({calls:.0f} BLS calls; Triton's own request time of each), of which "
            f"{queued:.1f} ms waits in their queues{waiting} and "
            f"{moving:.1f} ms moves tensors into and out of them (compute input + output); {cost:.1f} ms is what the "
            f"BLS calls cost beyond that ({cost / calls:.2f} ms per call: the request built, passed through the "
            "python backend's shared memory, scheduled, answered); the remaining "
            f"{total - inside - cost:.1f} ms is the pipeline's own Python between calls (request parsing, the DDIM "
            "arithmetic, PNG encoding of the result).", ""]
