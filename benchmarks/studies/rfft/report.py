"""RFFT study's results file, per-image records, figure and docs/method.md blocks (``rfft-sweep``, ``rfft-test``).

benchmarks/results/rfft.json holds the validation sweep's summaries, the choice and the test
summaries (every measure with its interval; ratios and differences to the base paired), and
benchmarks/results/rfft_records_<split>.jsonl every image's record, so each number can be
recomputed without the models. docs/rfft-sweep.png: validation availability against diversity
per regulariser and beta.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import RESULTS, machine_line, write_results
from benchmarks.studies.rfft import summary as tables
from rfad.contract import CLASS_NAMES

FIGURE = Path(__file__).resolve().parents[3] / "docs" / "rfft-sweep.png"
COMMAND = "python -m benchmarks.studies.rfft.rfft_study"


def write_report(args) -> Path:
    """benchmarks/results/rfft.json and the records from the parts in ``args.work``; draws the figure,
    re-renders the docs."""
    from benchmarks.common import render_docs

    parts = {name: _read(args.work / f"{name}.json") for name in ("sweep", "choose", "final")}
    if parts["choose"] is None:
        raise SystemExit("report: run the sweep and choose parts first")
    for split in ("val", "test"):
        evaluations = sorted((args.work / "evals").glob(f"*-{split}.json"))
        if evaluations:
            _write_records(evaluations, RESULTS / f"rfft_records_{split}.jsonl")
    settings = {"world": str(args.world), "data": str(args.data), "recipe": vars(args.recipe),
                "threshold": args.threshold, "max_attempts": args.max_attempts, "seeds": args.seeds,
                "lrs": args.lrs, "betas": args.betas, "steps_grid": args.steps_grid, "regs": args.regs,
                "bootstrap_draws": args.draws}
    rows = [{"part": name, **value} for name, value in parts.items() if value is not None]
    path = write_results("rfft", rows, settings)
    draw_figure(parts["choose"], FIGURE)
    render_docs()
    return path


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_records(evaluations: list[Path], path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as file:
        for evaluation in evaluations:
            result = json.loads(evaluation.read_text())
            for record in result["records"]:
                file.write(json.dumps({"controlnet": result["controlnet"], **record}) + "\n")
    partial.replace(path)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _measure(entry: dict, percent: bool = True) -> str:
    """A value with its 95 % interval."""
    value, (low, high) = entry["value"], entry["interval"]
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} % ({100 * low:.1f}-{100 * high:.1f})" if percent else f"{value:.2f} ({low:.2f}-{high:.2f})"


def _points(entry: dict) -> str:
    """A paired difference of shares, in percentage points, with its interval and p value."""
    return (f"{100 * entry['difference']:+.1f} ({100 * entry['low']:+.1f} to {100 * entry['high']:+.1f}; "
            f"p {entry['p']:.3f})")


def _ratio(entry: dict | None) -> str:
    return "1 (base)" if entry is None else _measure(entry, percent=False)


def _row(name: str, s: dict, base: bool) -> str:
    guard = "" if base else " / ".join("yes" if ok else "**no**" for ok in tables.meets_guards(s).values())
    gain = "-" if base else _points(s["oracle_available vs base"])
    return (f"| {name} | {_measure(s['oracle_available'])} | {gain} | {_ratio(s.get('seed_distance vs base'))} | "
            f"{_ratio(s.get('cross_distance vs base'))} | {_measure(s['prompt_fidelity'])} | "
            f"{_measure(s['judge_auc'], percent=False)} | {guard or '-'} |")


HEADER = ("| ControlNet | oracle: Available | vs base (points) | seed diversity (x base) | cross-product (x base) "
          "| prompt fidelity | RFNet AUC | keeps seed / cross / fidelity |")


def sweep_block(result: dict) -> str:
    choose = next(r for r in result["rows"] if r["part"] == "choose")
    val, chosen = choose["val"], choose["chosen"]
    lines = [HEADER, "|---" * 8 + "|", _row("base", val["summaries"]["base"], True)]
    for name, s in val["summaries"].items():
        if name != "base":
            marker = " (chosen)" if any(entry["setting"] == name for entry in chosen.values()) else ""
            lines.append(_row(f"`{name}`{marker}", s, False))
    notes = []
    for reg, entry in chosen.items():
        if "rule" in entry:
            notes.append(f"`{reg}`: `{entry['setting']}` ({entry['rule']})")
        else:
            kept = ("kept diversity and fidelity" if entry["kept_diversity_and_fidelity"]
                    else "no setting kept diversity and fidelity: the highest availability")
            notes.append(f"`{reg}`: `{entry['setting']}` ({entry['eligible']} of {entry['candidates']} settings "
                         f"eligible; {kept})")
    lines += ["", f"Validation: {val['products']} products x {val['images_per_product']} images, training seed 0. "
              "Chosen: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def targets(s: dict) -> dict[str, bool]:
    """The issue's targets for a tuned row on test, against the base (paired)."""
    ratio = lambda name: s[f"{name} vs base"]["value"] or 0.0  # noqa: E731
    return {f"+{100 * tables.GAIN_TARGET:g} points": s["oracle_available vs base"]["difference"] >= tables.GAIN_TARGET,
            **tables.meets_guards(s), f"AUC >= {tables.AUC_FLOOR:g}x": ratio("judge_auc") >= tables.AUC_FLOOR}


def test_block(result: dict) -> str:
    final = next((r for r in result["rows"] if r["part"] == "final"), None)
    if final is None:
        return "Not measured yet: the test split is read by the study's `final` part, after the choice."
    test, m = final["test"], result["settings"]["max_attempts"]
    summaries = test["summaries"]
    lines = [HEADER, "|---" * 8 + "|", _row("base", summaries["base"], True)]
    lines += [_row(f"`{name}`", s, False) for name, s in summaries.items() if name != "base"]
    lines += ["", "Targets (gain / seed diversity / cross-product diversity / fidelity / RFNet's AUC vs the base's): "
              + "; ".join(f"`{name}` " + ", ".join(f"{target} {'met' if ok else '**not met**'}"
                                                   for target, ok in targets(s).items())
                          for name, s in summaries.items() if name != "base") + "."]
    for pair, c in test.get("comparisons", {}).items():
        lines += ["", f"`{pair}`, paired on the same products and seeds: oracle availability "
                  f"{_points(c['oracle_available'])} points, prompt fidelity {_points(c['prompt_fidelity'])} points, "
                  f"seed diversity x{_measure(c['seed_distance'], percent=False)}, cross-product diversity "
                  f"x{_measure(c['cross_distance'], percent=False)}."]
    lines += ["", "Each class's share (the oracle), and RFNet against the oracle:", "",
              "| ControlNet | " + " | ".join(CLASS_NAMES) + " | RFNet: Available | RFNet - oracle | RFNet AUC (x base) |",
              "|---" * (len(CLASS_NAMES) + 4) + "|"]
    for name, s in summaries.items():
        shares = [s["oracle_available"]] + [s[f"share {c}"] for c in CLASS_NAMES[1:]]
        versus = "1 (base)" if name == "base" else _measure(s["judge_auc vs base"], percent=False)
        lines.append(f"| {name} | " + " | ".join(_pct(entry["value"]) for entry in shares)
                     + f" | {_pct(s['judge_available']['value'])} | {100 * s['judge_minus_oracle']['value']:+.1f} points "
                     f"| {versus} |")
    lines += ["", "Recurrent Generation on the same requests (each product's images are the attempts of one "
              "request):", "",
              f"| ControlNet | one attempt | up to {m}, RFNet | up to {m}, oracle (ceiling) | attempts (RFNet) | "
              f"none passed in {m} | attempts to an oracle-Available image |",
              "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(f"| {name} | {_measure(s['loop one_attempt'])} | {_measure(s['loop judge_loop'])} | "
                     f"{_measure(s['loop oracle_loop'])} | {s['loop judge_attempts']['value']:.2f} | "
                     f"{_pct(s['loop judge_exhausted']['value'])} | {s['loop to_oracle']['value']:.2f} |")
    lines += ["", f"Test: {test['products']} products x {test['images_per_product']} images per ControlNet; each "
              f"tuned row averages training seeds {', '.join(map(str, final['seeds']))}. Intervals: 95 % by product; "
              "differences and ratios to the base paired on the same products and seeds. A request without an "
              f"oracle-Available image counts {m + 1} attempts to one."]
    return "\n".join(lines)


def block(name: str) -> str:
    """docs/method.md's block ``rfft-sweep`` or ``rfft-test``."""
    path = RESULTS / "rfft.json"
    if not path.is_file():
        return f"Not measured yet: run `{COMMAND} --work DIR --data RF-MINI`."
    result = json.loads(path.read_text())
    body = {"rfft-sweep": sweep_block, "rfft-test": test_block}[name](result)
    return f"{machine_line(result)} `{COMMAND}`.\n\n{body}"


def draw_figure(choose: dict, path: Path) -> None:
    """Validation oracle availability against seed diversity (x base), one point per setting, per
    regulariser; the base at (1, its availability)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.studies.rfft.runs import Setting

    summaries = choose["val"]["summaries"]
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    colours = {"cc": "tab:blue", "kl": "tab:orange", "none": "tab:red"}
    for reg, colour in colours.items():
        points = [(Setting.parse(n), s) for n, s in summaries.items() if n != "base" and Setting.parse(n).reg == reg]
        if not points:
            continue
        axis.scatter([s["seed_distance vs base"]["value"] for _, s in points],
                     [100 * s["oracle_available"]["value"] for _, s in points], color=colour, label=reg)
        for setting, s in points:
            label = f"lr {setting.lr:g}, {setting.steps} st" + ("" if reg == "none" else f", b {setting.beta:g}")
            axis.annotate(label, (s["seed_distance vs base"]["value"], 100 * s["oracle_available"]["value"]),
                          fontsize=6, xytext=(3, 3), textcoords="offset points")
    axis.scatter([1.0], [100 * summaries["base"]["oracle_available"]["value"]], color="black", marker="s", label="base")
    axis.axvline(tables.DIVERSITY_FLOOR, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("seed diversity (x base)")
    axis.set_ylabel("oracle: Available (%)")
    axis.set_title("RFFT settings on validation products")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
