"""docs/performance.md's generated blocks and its plots, from benchmarks/results/*.json.

    python -m benchmarks.suite.report     # draw the plots, then re-render the docs (docs/render.py)

Every number on the page comes from a results file written by a benchmark script, or from the
benchmarks' own settings (:data:`common.SHAPES`, :data:`run_all.SCRIPTS`); nothing is typed by
hand. docs/render.py renders each ``<!-- generated:performance NAME -->`` block through
:func:`block` (and tests/test_docs.py checks that the page is current); the plots are drawn into
benchmarks/results/*.png by :func:`plots`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS, SHAPES, machine_line, markdown_table, render_docs
from benchmarks.suite.report_serving import perf_analyzer_lines, targets_lines

# The page sits in docs/; the plots in benchmarks/results/.
PLOTS = "../benchmarks/results"

# What each script measures (the results tables below give the settings each run used).
SCRIPT_MEASURES = {
    "export_bench.py": "every component and the whole denoising loop, PyTorch eager vs ONNX Runtime",
    "pipeline_bench.py": "one attempt: diffusers eager vs rfad's loop on ONNX Runtime in process vs Triton-served "
                         "`rfad_pipeline` over gRPC; serving overhead per BLS call; the judge's cost against the "
                         "attempt; pipeline judging through components vs `rfad_judge`",
    "throughput_bench.py": "served images/s and p50/p90/p99 latency against concurrent clients, dynamic batching "
                           "on/off, one vs several candidates per attempt",
    "availability_bench.py": "attempts and latency to the first Available image against the per-candidate "
                             "availability rate (set through the threshold), beside the geometric expectation; "
                             "K candidates per attempt vs sequential attempts",
    "perf_analyzer_bench.py": "Triton's perf_analyzer against `rfad_pipeline` and `rfad_judge` at 1, 2 and 4 clients "
                              "beside rfad's client; the server-side breakdown of every model the pipeline calls",
    "soak.py": "N clients x M requests of mixed valid and invalid requests: outcomes, latency, server memory per "
               "process and its slope per request (the long mode: 10,000 requests, mixed image sizes)",
    "session_memory_bench.py": "each component's onnxruntime session: memory after warm-up and after mixed batches, "
                               "and latency, under onnxruntime's defaults, rfad's memory options and the alternatives",
    "judge_prepare_memory.py": "the judge endpoint's prepare step: peak working memory and time for its largest "
                               "requests (4096-px ads, a 2048-px product), beside the generation canvas of that size",
    "perf_analyzer_input.py": "input files for Triton's perf_analyzer (`perf_analyzer --input-data`): "
                              "`benchmarks/results/perf_analyzer_rfad_pipeline.json`, `..._rfad_judge.json`",
    "rfnet_bench.py": "RFNet judge latency per image (eager vs ONNX Runtime) and training throughput, tiny and "
                      "full shapes",
    "rfft_step.py": "RFFT step time and memory with and without gradient checkpointing, and an estimate of "
                    "SD-1.5-shape activation memory",
}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _plot_pipeline(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    shapes = sorted({r["shape"] for r in result["rows"]}, key=["tiny", "small"].index)
    backends = list(dict.fromkeys(r["backend"] for r in result["rows"]))
    figure, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 3.6), squeeze=False)
    for axis, shape in zip(axes[0], shapes):
        rows = {r["backend"]: r for r in result["rows"] if r["shape"] == shape}
        names = [b for b in backends if b in rows]
        medians = [rows[b]["median_s"] for b in names]
        errors = [[rows[b]["median_s"] - rows[b]["min_s"] for b in names], [rows[b]["max_s"] - rows[b]["median_s"] for b in names]]
        axis.barh(range(len(names)), medians, xerr=errors, color="tab:blue")
        axis.set_yticks(range(len(names)), names, fontsize=8)
        axis.invert_yaxis()
        r0 = rows[names[0]]
        axis.set_title(f"{shape}: one attempt, {r0['size']} px, {r0['steps']} steps")
        axis.set_xlabel("seconds (median, min-max)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_throughput(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for dynamic in (True, False):
        for k in sorted({r["candidates"] for r in result["rows"]}):
            rows = sorted((r for r in result["rows"] if r["dynamic_batching"] == dynamic and r["candidates"] == k),
                          key=lambda r: r["concurrency"])
            axis.plot([r["concurrency"] for r in rows], [r["images_per_s"] for r in rows], marker="o",
                      linestyle="-" if dynamic else "--", label=f"K={k}, dynamic batching {'on' if dynamic else 'off'}")
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("images / s")
    axis.set_xscale("log", base=2)
    axis.legend(fontsize=8)
    axis.set_title("served throughput (tiny shape)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_availability(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for k in sorted({r["candidates"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["candidates"] == k), key=lambda r: r["calibrated_rate"])
        q = [r["calibrated_rate"] for r in rows]
        line, = axis.plot(q, [r["mean_attempts"] for r in rows], marker="o", label=f"K={k} measured")
        axis.plot(q, [r["expected_attempts"] for r in rows], linestyle="--", color=line.get_color(),
                  label=f"K={k} geometric")
    axis.set_xlabel("per-candidate availability rate q")
    axis.set_ylabel("attempts to the first Available image")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _pipeline_notes(pipeline: dict) -> str:
    """The two derived figures of the pipeline benchmark, said only as far as the spread allows."""
    from rfad.serving.pipeline_parameters import DEFAULT_JUDGE

    notes, clear_winner, lower_median = [], {}, {}
    for shape in sorted({r["shape"] for r in pipeline["rows"]}, key=["tiny", "small"].index):
        rows = {r["backend"]: r for r in pipeline["rows"] if r["shape"] == shape}
        served = rows["triton rfad_pipeline (judge: components)"]
        ensemble = rows["triton rfad_pipeline (judge: ensemble)"]
        overhead = served.get("bls_overhead_ms_per_call")
        if overhead is not None:
            overhead_text = (f"{overhead:.2f} ms per BLS call beyond the called model's queue + compute, by the "
                             f"server's metrics ({served['component_calls']} calls per request)")
        elif served["overhead_per_bls_call_s"] > 0:
            overhead_text = (f"{served['overhead_per_bls_call_s'] * 1000:.1f} ms per BLS call by subtraction "
                             f"({served['component_calls']} calls per request)")
        else:
            overhead_text = "not measurable (served was no slower than in process, within the runs' spread)"
        fast, slow = sorted((("components", served), ("ensemble", ensemble)), key=lambda kv: kv[1]["median_s"])
        # A route counts as faster only if it beats the other beyond the runs' spread.
        clear = fast[1]["max_s"] < slow[1]["min_s"]
        lower_median[shape] = fast[0]
        if clear:
            clear_winner[shape] = fast[0]
        notes.append(f"{shape}: serving overhead {overhead_text}; pipeline judging through `components` "
                     f"{served['median_s']:.3f} s ({served['min_s']:.3f}-{served['max_s']:.3f}) vs `ensemble` "
                     f"{ensemble['median_s']:.3f} s ({ensemble['min_s']:.3f}-{ensemble['max_s']:.3f}): "
                     + (f"`{fast[0]}` is faster." if clear else f"`{fast[0]}` has the lower median, inside the spread."))
    # The default is kept wherever it is not slower beyond the spread (the rule).
    beaten = sorted(shape for shape, winner in clear_winner.items() if winner != DEFAULT_JUDGE)
    if beaten:
        verdict = (f"although in this run the other route was faster beyond the spread at: {', '.join(beaten)} "
                   "(re-check before keeping the default)")
    elif set(lower_median.values()) == {DEFAULT_JUDGE}:
        verdict = "it is not slower: it has the lower median at every shape measured here"
    else:
        verdict = "it is not slower beyond the runs' spread at any shape measured here"
    return ("- " + "\n- ".join(notes) + f"\n\n`rfad-export triton-repo` defaults to `--pipeline-judge {DEFAULT_JUDGE}`: "
            f"{verdict}.")


def _running() -> list[str]:
    """How to run the benchmarks and what each script measures (from run_all.SCRIPTS and common.SHAPES)."""
    from benchmarks.suite.run_all import SCRIPTS

    suite = [script for _, script, _, _ in SCRIPTS]
    shapes = " and ".join(f"`{s.name}` (UNet channels {'/'.join(map(str, s.unet_channels))}, {s.size} px, {s.steps} steps)"
                       for s in SHAPES.values())
    rows = [{"script": f"`{script}`", "measures": SCRIPT_MEASURES[script]} for script in suite]
    commands = [("make bench", "the suite, then this page and its plots"),
                (".venv/bin/python -m benchmarks.suite.run_all --quick --skip soak", "fewer repeats, a subset"),
                (".venv/bin/python -m benchmarks.suite.rfnet_bench --quick", "one script of the suite"),
                (".venv/bin/python -m benchmarks.suite.report", "redraw the plots and re-render this page")]
    return ["```bash", *[f"{command:<68}# {why}" for command, why in commands], "```", "",
            "From the checkout's root. The suite (`make bench`, `benchmarks/suite/run_all.py`) runs every script of "
            "`benchmarks/suite/` in turn, then `report.py`. Each script writes `benchmarks/results/<name>.json` "
            "(machine, versions, settings, rows) and prints a Markdown table; `report.py` draws the PNG plots and "
            "`docs/render.py` renders this page's tables, from those files only. Models are random-weight builds of the real architectures at two shapes, "
            f"{shapes}, built and exported once into `benchmarks/.cache/`; the suite's time below was measured from "
            "an empty cache, building and exporting included. Run it on an otherwise idle machine: the numbers "
            "are wall-clock times. The studies (`benchmarks/studies/`: the method, the miniature world, SD-1.5 at "
            "its published sizes) are run on their own ([their status and commands](../benchmarks/README.md)).", "",
            markdown_table(rows, [("script", "script"), ("measures", "measures")]), "",
            "`perf_analyzer_bench.py` finds Triton's perf_analyzer or installs it from the tritonclient 2.51.0 wheel "
            "(`benchmarks/suite/perf_analyzer_tool.py` says how); to run it by hand against a server of your own:",
            "", "```bash", "perf_analyzer -m rfad_pipeline -u 127.0.0.1:8001 -i grpc \\",
            "    --input-data benchmarks/results/perf_analyzer_rfad_pipeline.json --concurrency-range 1:4 "
            "--measurement-interval 20000", "```"]


def plots() -> None:
    """Draw the plots of the results that exist into benchmarks/results/*.png."""
    for name, draw in (("pipeline", _plot_pipeline), ("throughput", _plot_throughput),
                       ("availability", _plot_availability)):
        result = load(name)
        if result:
            draw(result, RESULTS / f"{name}.png")


def _pipeline(pipeline: dict) -> list[str]:
    return [machine_line(pipeline), "One candidate, CFG 7.5, one attempt; median of repeats (min-max in the plot).", "",
            markdown_table(pipeline["rows"], [("shape", "shape"), ("backend", "backend"), ("median_s", "median s"),
                                              ("min_s", "min s"), ("max_s", "max s"),
                                              ("x_diffusers", "speed-up vs diffusers"),
                                              ("judge_share_of_attempt", "judge / generation"),
                                              ("overhead_per_bls_call_s", "(served - in process) / BLS calls, s"),
                                              ("bls_overhead_ms_per_call", "BLS overhead per call, ms")]),
            "", f"![one attempt]({PLOTS}/pipeline.png)", "", _pipeline_notes(pipeline), "", *targets_lines(pipeline)]


def _export(export: dict) -> list[str]:
    return [machine_line(export), "",
            markdown_table(export["rows"], [("shape", "shape"), ("scope", "component / loop"), ("batch", "batch"),
                                            ("backend", "backend"), ("median_s", "median s"),
                                            ("speedup_vs_eager", "x eager")])]


def _throughput(throughput: dict) -> list[str]:
    settings = throughput["settings"]
    return [machine_line(throughput),
            f"{settings['steps']} steps, one attempt per request, {settings['pipeline_instances']} "
            "rfad_pipeline instances.", "",
            markdown_table(throughput["rows"], [("dynamic_batching", "dynamic batching"), ("candidates", "K"),
                                                ("concurrency", "clients"), ("images_per_s", "images/s"),
                                                ("p50_s", "p50 s"), ("p90_s", "p90 s"), ("p99_s", "p99 s")]),
            "", f"![throughput]({PLOTS}/throughput.png)"]


def _availability(availability: dict) -> list[str]:
    return [machine_line(availability),
            f"{availability['settings']['steps']} steps, up to {availability['settings']['max_attempts']} "
            "attempts; q set through the threshold; geometric expectation "
            "E[attempts] with P = 1 - (1 - q)^K per attempt, cut at the cap.", "",
            markdown_table(availability["rows"], [
                ("calibrated_rate", "q"), ("candidates", "K"), ("requests", "requests"),
                ("mean_attempts", "attempts measured"), ("expected_attempts", "attempts geometric"),
                ("mean_candidates", "candidates generated"), ("mean_latency_s", "latency to result s"),
                ("latency_per_attempt_s", "s per attempt")]),
            "", f"![availability]({PLOTS}/availability.png)"]


def _rfnet(rfnet: dict) -> list[str]:
    return [machine_line(rfnet), "",
            markdown_table(rfnet["rows"], [("shape", "shape"), ("mode", "mode"), ("backend", "backend"),
                                           ("batch", "batch"), ("median_s", "median s"),
                                           ("per_image_s", "s / image"), ("samples_per_s", "samples / s"),
                                           ("caption_s", "caption s")])]


def _rfft(rfft: dict) -> list[str]:
    measured = [r for r in rfft["rows"] if "grad_step_s" in r]
    estimated = [r for r in rfft["rows"] if "512px_estimate_mib" in r]
    lines = [machine_line(rfft), "",
             markdown_table(measured, [("shape", "shape"), ("grad_checkpointing", "grad checkpointing"),
                                       ("ddim_step_no_grad_s", "DDIM step (no grad) s"),
                                       ("grad_step_s", "differentiable step s"),
                                       ("saved_per_sample_mib", "saved for backward / sample MiB"),
                                       ("peak_rss_growth_mib", "peak RSS growth MiB")])]
    if estimated:
        lines += ["", "SD-1.5 shape, ESTIMATE (fit over 64-192 px, extrapolated to 512 px):", "",
                  markdown_table(estimated, [("part", "part"), ("grad_checkpointing", "grad checkpointing"),
                                             ("512px_estimate_mib", "activations at 512 px, MiB")])]
    return lines


def _soak(soak: dict) -> list[str]:
    r = soak["rows"][0]
    return [machine_line(soak),
            f"{r['clients']} clients, {r['requests']} requests in {r['seconds']:.0f} s: "
            f"{r['valid_ok']} of {r['valid']} valid requests succeeded, {r['invalid_rejected']} of "
            f"{r['invalid']} invalid ones were INVALID_ARGUMENT, {r['unexpected_count']} unexpected outcomes; "
            f"valid latency p50 {r['latency_p50_s']:.2f} s, p99 {r['latency_p99_s']:.2f} s; server RSS "
            f"{r['rss_start_mib']:.0f} MiB after warm-up, {r['rss_end_mib']:.0f} MiB at the end (bound: "
            f"+{r['rss_growth_bound_mib']:.0f} MiB); server alive at the end: {r['server_alive']}.", "",
            _soak_kinds(r)]


def _soak_long(soak_long: dict) -> list[str]:
    r = soak_long["rows"][0]
    return [machine_line(soak_long), _soak_summary(r), "",
            "Resident memory per process after warm-up, at the end and at most, its anonymous and shared-memory "
            "parts at the end, the stub's python-backend shared-memory region, and the slope over the second half "
            "of the run (least squares, KB per request):", "",
            markdown_table(r["processes"] + [r["memory_total"]],
                           [("process", "process"), ("rss_start_mib", "after warm-up MiB"),
                            ("rss_end_mib", "end MiB"), ("peak_over_start", "max / after warm-up"),
                            ("anon_end_mib", "anon MiB"), ("shmem_end_mib", "shm MiB"),
                            ("shm_region_end_mib", "shm region MiB"),
                            ("slope_kb_per_request", "slope KB / request")]), "",
            _soak_kinds(r)]


def _judge_prepare(prepare: dict) -> list[str]:
    return [machine_line(prepare),
            "Each case in a fresh process: peak resident memory added while `judge_tensors` prepares the request "
            f"(ads of {prepare['settings']['side']} x {prepare['settings']['side']} px, a "
            f"{prepare['settings']['product_side']}-px product), and, beside it, the generation canvas of that "
            "size (`prepare_canvas`), which the step built for the judge's product view before `place_product`.",
            "", markdown_table(prepare["rows"], [("case", "case"), ("ads", "ads"),
                                                 ("peak_added_mib", "peak added, MiB"),
                                                 ("after_added_mib", "kept after, MiB"), ("seconds", "s")])]


def _suite_time(suite: dict) -> list[str]:
    from benchmarks.suite.run_all import SCRIPTS

    since = [script for _, script, _, _ in SCRIPTS if script not in suite["settings"]["scripts"]]
    return [f"The whole suite (`make bench`{' --quick' if suite['rows'][0]['quick'] else ''}) took "
            f"{suite['rows'][0]['seconds'] / 60:.1f} minutes on {suite['machine']['date']}"
            + (f", before {', '.join(f'`{s}`' for s in since)} joined it." if since else ".")]


# docs/performance.md's blocks (``<!-- generated:performance NAME -->``): NAME -> (the results
# file, the script that writes it, the section's lines from that file's contents).
SECTIONS = {
    "pipeline": ("pipeline", "pipeline_bench", _pipeline),
    "perf-analyzer": ("perf_analyzer", "perf_analyzer_bench", lambda r: perf_analyzer_lines(r, machine_line(r))),
    "export": ("export", "export_bench", _export),
    "throughput": ("throughput", "throughput_bench", _throughput),
    "availability": ("availability", "availability_bench", _availability),
    "rfnet": ("rfnet", "rfnet_bench", _rfnet),
    "rfft": ("rfft_step", "rfft_step", _rfft),
    "soak": ("soak", "soak", _soak),
    "soak-long": ("soak_long", "soak --long", _soak_long),
    "judge-prepare": ("judge_prepare_memory", "judge_prepare_memory", _judge_prepare),
    "session-memory": ("session_memory", "session_memory_bench", lambda r: _session_memory_lines(r)),
    "suite-time": ("suite", "run_all", _suite_time),
}


def block(name: str) -> str:
    """The text of docs/performance.md's block ``name`` (docs/render.py renders it)."""
    if name == "running":
        return "\n".join(_running())
    if name == "gpu":
        from benchmarks.gpu.report import gpu_section

        return "\n".join(gpu_section(RESULTS)).strip("\n")
    if name not in SECTIONS:
        raise ValueError(f"<!-- generated:performance {name} -->: unknown section (known: running, gpu, "
                         f"{', '.join(SECTIONS)})")
    results, script, lines = SECTIONS[name]
    result = load(results)
    if result is None:
        return f"Not measured yet: run `python -m benchmarks.suite.{script}`."
    return "\n".join(lines(result)).strip("\n")


def _session_memory_lines(result: dict) -> list[str]:
    """Each component's onnxruntime session: growth over mixed batches per option set, and rfad's latency."""
    memory = [r for r in result["rows"] if r["part"] == "memory"]
    latency = [r for r in result["rows"] if r["part"] == "latency"]
    option_sets = list(dict.fromkeys(r["options"] for r in memory))
    components = list(dict.fromkeys(r["component"] for r in memory))
    growth = [{"component": f"`{c}`", **{o: f"{r['growth']:.2f}x" for r in memory if r["component"] == c
                                          for o in [r["options"]]},
               "rfad MiB": next(f"{r['session_after_runs_mib']:.1f}" for r in memory
                                if r["component"] == c and r["options"] == "rfad")} for c in components]
    batches = sorted({r["batch"] for r in latency})
    speed = [{"component": f"`{c}`", **{f"batch {r['batch']}": f"{r['rfad_over_defaults']:.2f}x" for r in latency
                                         if r["component"] == c}} for c in components]
    settings = result["settings"]
    return [machine_line(result),
            "Per component of the tiny export, a fresh process per option set: a warm-up at the largest batch, "
            f"then {settings['runs']} runs of batches drawn as the dynamic batcher hands them out "
            f"({min(settings['batches'])} to {max(settings['batches'])}); the session's resident memory after the runs "
            "over its memory after the warm-up (1.00x: flat), and rfad's session after the runs (`rfad`: "
            "`rfad.onnx_session.MEMORY_OPTIONS`, the component's own).", "",
            markdown_table(growth, [("component", "component"), *[(o, o) for o in option_sets],
                                    ("rfad MiB", "rfad, MiB after the runs")]), "",
            f"Latency of rfad's session over onnxruntime's defaults (median of {settings['repeats']} interleaved runs):",
            "", markdown_table(speed, [("component", "component"), *[(f"batch {b}", f"batch {b}") for b in batches]]),
            ""]


def _soak_summary(r: dict) -> str:
    """One paragraph of a long soak: requests, outcomes, latency by kind, total memory and its bounds."""
    by_kind = r["latency_by_kind"]
    latency = "; ".join(f"{kind} p50 {v['p50_s']:.2f} s, p99 {v['p99_s']:.2f} s" for kind, v in by_kind.items()
                        if v.get("count"))
    slope = r.get("rss_slope_kb_per_request")
    return (f"{r['clients']} clients, {r['requests']} requests ({r['sizes']} image sizes) in "
            f"{r['seconds']:.0f} s: {r['valid_ok']} of {r['valid']} valid requests succeeded, {r['invalid_rejected']} of "
            f"{r['invalid']} invalid ones were INVALID_ARGUMENT, {r['unexpected_count']} unexpected outcomes; "
            f"latency {latency or 'n/a'}. Server RSS (tritonserver and its stubs) {r['rss_start_mib']:.0f} MiB after "
            f"warm-up, {r['rss_end_mib']:.0f} MiB at the end, {r['rss_max_mib']:.0f} MiB at most (bound: "
            f"+{r['rss_growth_bound_mib']:.0f} MiB; every process within {r['peak_bound']}x its size after warm-up: "
            f"{not r['processes_over_peak_bound']}); slope over the second half "
            + ("n/a" if slope is None else f"{slope:.2f} KB per request")
            + (f" (bound {r['slope_bound_kb_per_request']} KB)" if r["slope_judged"] else " (too short a run to judge)")
            + f"; server alive at the end: {r['server_alive']}.")


def _soak_kinds(r: dict) -> str:
    kinds = [{"kind": kind, **outcomes} for kind, outcomes in r["outcomes"].items()]
    statuses = sorted({k for row in kinds for k in row if k != "kind"})
    return markdown_table(kinds, [("kind", "request kind")] + [(s, s) for s in statuses])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    plots()
    render_docs()


if __name__ == "__main__":
    main()
