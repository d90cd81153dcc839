"""The screening benchmark's tables from its part results (numpy only): per arm, the comparison of the
screened arm with the baseline (paired by product), the AUC by step, and one Markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from benchmarks.studies.screening.stats import auc, bootstrap, difference, latency_percentiles, paired_bootstrap, ratio, share, speedup

PER_STEPS = 1000  # Available images are reported per this many candidate-steps


def _per_steps(records: list[dict]) -> float | None:
    value = ratio("oracle_available_images", "candidate_steps")(records)
    return None if value is None else value * PER_STEPS


def arm_summary(records: list[dict], rounds: int) -> dict:
    """One arm's numbers with their 95 % intervals over products."""
    return {
        "requests": len(records),
        "available_per_cpu_s": bootstrap(records, ratio("oracle_available_images", "cpu_s"), rounds),
        "available_per_1000_steps": bootstrap(records, _per_steps, rounds),
        "oracle_available": bootstrap(records, share("oracle_available"), rounds),
        "judged_available": float(np.mean([r["judged_available"] for r in records])) if records else None,
        "cpu_s_per_request": float(np.mean([r["cpu_s"] for r in records])) if records else None,
        "candidate_steps_per_request": float(np.mean([r["candidate_steps"] for r in records])) if records else None,
        "attempts_per_request": float(np.mean([r["attempts"] for r in records])) if records else None,
        "screened_per_request": float(np.mean([len(r["screened"]) for r in records])) if records else None,
        "time_to_first_available_s": latency_percentiles(records),
    }


def comparison(baseline: list[dict], screened: list[dict], rounds: int) -> dict:
    """The screened arm over the baseline on the same products and seeds."""
    return {
        "available_per_cpu_s_ratio": paired_bootstrap(baseline, screened,
                                                      speedup("oracle_available_images", "cpu_s"), rounds),
        "available_per_step_ratio": paired_bootstrap(baseline, screened,
                                                     speedup("oracle_available_images", "candidate_steps"), rounds),
        "oracle_available_difference": paired_bootstrap(baseline, screened, difference("oracle_available"), rounds),
    }


def auc_table(part: dict, rounds: int) -> dict:
    """split -> judge -> step (or "final") -> AUC of p(Available) against the final oracle verdict, with intervals."""
    table: dict = {}
    for split in sorted({r["split"] for r in part["records"]}):
        records = [r for r in part["records"] if r["split"] == split]
        table[split] = {"candidates": len(records),
                        "oracle_available": float(np.mean([r["oracle"] == "Available" for r in records]))}
        for judge in part["judges"]:
            rows = {}
            for step in part["steps"]:
                rows[str(step)] = bootstrap(records, lambda rs, s=str(step), j=judge: auc(
                    [r["p_by_step"][j][s] for r in rs], [r["oracle"] == "Available" for r in rs]), rounds)
            table[split][judge] = rows
        table[split]["rfnet"]["final"] = bootstrap(records, lambda rs: auc(
            [r["p_final"] for r in rs], [r["oracle"] == "Available" for r in rs]), rounds)
        # Another judge against RFNet on the same previews: the difference resampled by product
        # (both AUCs of each resample from the same products: a paired comparison).
        for judge in [j for j in part["judges"] if j != "rfnet"]:
            table[split][f"{judge} - rfnet"] = {str(step): bootstrap(records, lambda rs, s=str(step), j=judge: _minus(
                auc([r["p_by_step"][j][s] for r in rs], [r["oracle"] == "Available" for r in rs]),
                auc([r["p_by_step"]["rfnet"][s] for r in rs], [r["oracle"] == "Available" for r in rs])), rounds)
                for step in part["steps"]}
    return table


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _arms(records: list[dict]) -> dict[str, list[dict]]:
    arms: dict[str, list[dict]] = {}
    for record in records:
        arms.setdefault(record["arm"], []).append(record)
    return arms


def path_table(part: dict | None, rounds: int) -> dict | None:
    """Per arm of one path (in process or served) and the screened arm's comparison with the baseline."""
    if part is None:
        return None
    arms = _arms(part["records"])
    out = {"arms": {name: arm_summary(records, rounds) for name, records in arms.items()}}
    screened = [name for name in arms if name != "baseline"]
    if "baseline" in arms and screened:
        out["comparison"] = {name: comparison(arms["baseline"], arms[name], rounds) for name in screened}
    return out


def _ci(entry: dict | None, digits: int = 3) -> str:
    if entry is None or entry.get("value") is None:
        return "–"
    value = f"{entry['value']:.{digits}f}"
    if entry.get("low") is None:
        return value
    return f"{value} [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    lines = []
    aucs = result.get("auc") or {}
    if aucs:
        lines += ["| split | judge | step | AUC of p(Available) vs the final oracle verdict [95 % CI] |",
                  "|---|---|---|---|"]
        for split, table in aucs.items():
            for judge, rows in table.items():
                if not isinstance(rows, dict) or judge in ("candidates",):
                    continue
                for step, entry in rows.items():
                    lines.append(f"| {split} | {judge} | {step} | {_ci(entry)} |")
        lines.append("")
    chosen = result.get("chosen")
    if chosen:
        lines += [f"Chosen on the validation products: screen_at {chosen['screen_at']:g}, screen_threshold "
                  f"{chosen['screen_threshold']:g} ({result['choice_rule']}).", ""]
    if not (result.get("inprocess") or result.get("served")):
        return "\n".join(lines).rstrip("\n")
    lines += ["| path | arm | Available / CPU-s | Available / 1000 steps | oracle availability | p50 / p99 first "
              "Available (s) | screened / request |", "|---|---|---|---|---|---|---|"]
    for path in ("inprocess", "served"):
        table = result.get(path)
        if not table:
            continue
        for name, arm in table["arms"].items():
            latency = arm["time_to_first_available_s"]
            lines.append(f"| {path} | {name} | {_ci(arm['available_per_cpu_s'])} | "
                         f"{_ci(arm['available_per_1000_steps'])} | {_ci(arm['oracle_available'])} | "
                         f"{_seconds(latency['p50'])} / {_seconds(latency['p99'])} | {arm['screened_per_request']:.2f} |")
        for name, comp in (table.get("comparison") or {}).items():
            lines.append(f"| {path} | {name} / baseline | × {_ci(comp['available_per_cpu_s_ratio'], 2)} | "
                         f"× {_ci(comp['available_per_step_ratio'], 2)} | "
                         f"{_ci(comp['oracle_available_difference'])} (difference) | | |")
    return "\n".join(lines)


def report(parts: dict, rounds: int, settings: dict) -> tuple[dict, str]:
    """(the result JSON, its Markdown table) from the part results that exist."""
    choice = parts.get("choose")
    result = {
        "settings": settings,
        "auc": auc_table(parts["auc"], rounds) if parts.get("auc") else None,
        "validation": ({name: summary for name, summary in choice["summaries"].items()} if choice else None),
        "chosen": choice["chosen"] if choice else None,
        "choice_rule": choice["rule"] if choice else None,
        "inprocess": path_table(parts.get("inprocess"), rounds),
        "served": path_table(parts.get("served"), rounds),
        "seconds": {name: part.get("seconds") for name, part in parts.items() if part},
    }
    return result, markdown(result)


RESULTS = Path(__file__).resolve().parents[2] / "results" / "screening.json"
# The AUC part run again with a noise-aware screening RFNet (--screen-rfnet), on the same products.
NOISE_AWARE = RESULTS.with_name("screening_noise_aware.json")


def block(argument: str = "") -> str:
    """docs/performance.md's ``<!-- generated:screening -->`` block, from benchmarks/results/screening.json;
    ``<!-- generated:screening noise-aware -->`` from screening_noise_aware.json."""
    from benchmarks.common import machine_line

    if argument == "noise-aware":
        return _noise_aware_block()
    if not RESULTS.is_file():
        return "Not measured yet: run `python -m benchmarks.studies.screening.screening_bench --work DIR`."
    result = json.loads(RESULTS.read_text())
    settings = result["settings"]
    about = (f"`python -m benchmarks.studies.screening.screening_bench`: {settings['val_products']} validation and "
             f"{settings['test_products']} test products of RF-mini's request stream, {settings['requests']} requests "
             f"per product and arm, {settings['steps']} steps, up to {settings['max_attempts']} attempts, "
             f"{settings['seeds']} candidates per product for the AUC; 95 % intervals by product.")
    return f"{machine_line(result)} {about}\n\n{markdown(result)}"


def _noise_aware_block() -> str:
    from benchmarks.common import machine_line

    if not NOISE_AWARE.is_file():
        return ("Not measured yet: `rfad-data previews`, `rfad-train rfnet --init`, then "
                "`python -m benchmarks.studies.screening.screening_bench --parts auc,report --screen-rfnet DIR`.")
    result = json.loads(NOISE_AWARE.read_text())
    settings = result["settings"]
    made = settings.get("screen_rfnet_training") or {}
    config, previews = made.get("config") or {}, made.get("previews")
    how = (f"The screening RFNet: {config.get('init')} fine-tuned for {config.get('epochs')} epochs at lr "
           f"{config.get('lr'):g} (batch {config.get('batch_size')}) on ")
    if previews:
        how += (f"{previews['splits']['train']['images']} x0-previews at step {previews['screen_step']} of "
                f"{previews['steps']} of {previews['splits']['train']['products']} training products of the "
                f"{previews['world_products']}-product RF-mini (`rfad-data previews --world-products "
                f"{previews['world_products']}`), each labelled by the oracle's verdict on its final image; its "
                f"learning rate was chosen on the previews of {previews['splits']['val']['products']} validation "
                "products.")
    else:
        how += "x0-previews."
    about = (f"The AUC part of `python -m benchmarks.studies.screening.screening_bench --screen-rfnet`: "
             f"{settings['val_products']} validation and {settings['test_products']} test products, "
             f"{settings['seeds']} candidates each, {settings['steps']} steps; both judges on the same previews; "
             "95 % intervals by product; `screen_rfnet - rfnet` is the paired difference.")
    return f"{machine_line(result)} {about} {how}\n\n{markdown(result)}"
