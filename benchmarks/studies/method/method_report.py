"""docs/method.md's generated blocks and docs/method.png, from benchmarks/results/method.json.

    python -m benchmarks.studies.method.method_report     # draw the plot, then re-render the docs

docs/render.py renders each ``<!-- generated:method NAME -->`` block through :func:`block`
(``judges``, ``loop``, ``rfft``; ``placement``, from judge_placement.json); every number comes from
the results files, beside the paper's number it mirrors.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import ROOT, machine_line, render_docs

PLOT = ROOT / "docs" / "method.png"
RESULTS = ROOT / "benchmarks" / "results" / "method.json"
SHORT = {"Available": "Avail.", "Space Mismatch": "Space", "Size Mismatch": "Size", "Indistinctiveness": "Indist.",
         "Shape Hallucination": "Halluc."}
# The paper's numbers (Du et al., ECCV 2024; docs/design.md, RFNet and RFFT): AP of Available vs not on
# 1,000 test images, by judge; availability of one attempt on 1,000 products (RFNet, humans).
PAPER_AP = {"RFNet": 87.58, "without product image": 81.17, "without caption": 84.53, "without depth": 85.31,
            "without saliency": 83.91, "ResNet only (generated image)": 77.29}
PAPER_AVA = {"shipped": ("56.4 %", "70.1 %"), "none": ("84.7 % (ReFL)", "84.9 %"), "cc": ("85.5 %", "86.3 %")}
DROP = ("samples",)


def result_rows(parts: dict) -> list[dict]:
    """The results file's rows, one per measured thing, from the benchmark's part results (samples dropped)."""
    rows = []
    if parts.get("data"):
        rows.append({"kind": "rf_mini", **{k: v for k, v in parts["data"]["rf_mini"].items() if k != "settings"},
                     "settings": parts["data"]["rf_mini"]["settings"]})
    if parts.get("pretrain"):
        rows.append({"kind": "pretrain", **parts["pretrain"]})
    for row in (parts.get("judges") or {}).get("rows", []):
        rows.append({"kind": "judge", **row})
    loop = parts.get("loop")
    if loop:
        rows.append({"kind": "single_shot", **{k: v for k, v in loop["single_shot"].items() if k not in DROP}})
        rows.append({"kind": "recurrent", **{k: v for k, v in loop["recurrent"].items() if k not in DROP}})
    for name, run in ((parts.get("rfft") or {}).get("runs") or {}).items():
        rows.append({"kind": "rfft", "run": name, **{k: v for k, v in run.items() if k not in DROP + ("run_record",)}})
    return rows


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def judges_section(rows: list[dict]) -> str:
    judges = [r for r in rows if r["kind"] == "judge"]
    if not judges:
        return "Not measured yet."
    names = list(judges[0]["per_class_f1"])
    lines = ["| judge | accuracy | AP (Available) | F1 (Available, p >= 0.5) | "
             + " | ".join(f"F1 {SHORT[n]} (argmax)" for n in names) + " | paper AP | train s |",
             "|---" * (len(names) + 6) + "|"]
    for r in judges:
        f1 = " | ".join(_num(r["per_class_f1"][n]) for n in names)
        paper = PAPER_AP.get(r["judge"])
        lines.append(f"| {r['judge']} | {_pct(r['accuracy'])} | {_num(r['available_ap'])} | {_num(r['available_f1'])} "
                     f"| {f1} | {paper if paper is not None else '-'} | {r['train_seconds']:.0f} |")
    first = judges[0]
    support = ", ".join(f"{n} {first['support'][n]}" for n in names)
    lines += ["", f"Test split: {first['n']} images ({support}); majority class baseline accuracy "
                  f"{_pct(first['majority_baseline'])}; AP of a judge that guesses is the share of Available, "
                  f"{_pct(first['support']['Available'] / first['n'])}. The paper's AP is on 1,000 RF1M test images, "
                  "in percent."]
    pretrain = next((r for r in rows if r["kind"] == "pretrain"), None)
    if pretrain is not None:
        last = pretrain["history"][-1]
        lines += ["", f"Pretraining (every row but \"no pretraining\"): RFNet on {pretrain['scenes']} drawn scenes "
                      f"(balanced classes), {pretrain['epochs']} epochs; validation accuracy on drawn scenes "
                      f"{_pct(last.get('val_accuracy'))} at the last epoch (chance 20 %)."]
    return "\n".join(lines)


def loop_section(rows: list[dict]) -> str:
    shot = next((r for r in rows if r["kind"] == "single_shot"), None)
    loop = next((r for r in rows if r["kind"] == "recurrent"), None)
    if shot is None or loop is None:
        return "Not measured yet."
    hist = ", ".join(f"{a}: {n}" for a, n in loop["attempts_histogram"].items())
    early = " | ".join(_num(shot["rfnet_auc_early"][f]) for f in shot["rfnet_auc_early"])
    return "\n".join([
        "| | images | oracle: Available | RFNet: Available | attempts (mean) |",
        "|---|---|---|---|---|",
        f"| one attempt | {shot['images']} | {_pct(shot['oracle_available'])} | {_pct(shot['rfnet_available'])} | 1 |",
        f"| one attempt, the same seeds as the loop's first | {loop['requests']} | "
        f"{_pct(loop['oracle_available_first_attempt'])} | - | 1 |",
        f"| Recurrent Generation, up to {loop['max_attempts']} attempts | {loop['requests']} | "
        f"{_pct(loop['oracle_available_returned'])} | {_pct(loop['judged_available_returned'])} | "
        f"{loop['attempts_mean']:.2f} |",
        "",
        f"Attempts used (attempts: requests): {hist}. RFNet's threshold: p(Available) >= {shot['threshold']}.",
        "",
        "**Early signal.** AUC of RFNet's p(Available) against the final image's oracle verdict "
        f"({shot['images']} images; 0.5 = chance):",
        "",
        "| judged on | " + " | ".join(f"x0-prediction after {int(100 * float(f))} % of the steps"
                                      for f in shot["rfnet_auc_early"]) + " | the final image |",
        "|---" * (len(shot["rfnet_auc_early"]) + 2) + "|",
        f"| AUC | {early} | {_num(shot['rfnet_auc_final'])} |",
    ])


def rfft_section(rows: list[dict]) -> str:
    shot = next((r for r in rows if r["kind"] == "single_shot"), None)
    runs = [r for r in rows if r["kind"] == "rfft"]
    if shot is None or not runs:
        return "Not measured yet."
    base_distance = shot.get("seed_distance")
    names = list(shot["oracle_labels"])
    lines = ["| ControlNet | oracle: Available | RFNet: Available | mean p(Available) | seed distance (x base) | "
             + " | ".join(SHORT[n] for n in names) + " | paper: RFNet / human |", "|---" * (len(names) + 6) + "|"]
    for name, r in [("shipped (base)", shot)] + [(f"`rfad-train rfft --reg {r['reg']}`, {r['settings']['steps']} steps", r)
                                                 for r in runs]:
        key = "shipped" if r is shot else r["reg"]
        ratio = (r["seed_distance"] / base_distance) if base_distance and r.get("seed_distance") is not None else None
        paper = " / ".join(PAPER_AVA[key]) if key in PAPER_AVA else "-"
        shares = " | ".join(_pct(r["oracle_labels"][n]) for n in names)
        lines.append(f"| {name} | {_pct(r['oracle_available'])} | {_pct(r['rfnet_available'])} | "
                     f"{_num(r['rfnet_p_available_mean'])} | {_num(r.get('seed_distance'), 4)} ({_num(ratio, 2)}) | "
                     f"{shares} | {paper} |")
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        settings = r["settings"]
        groups.setdefault(tuple(settings[k] for k in ("steps", "batch_size", "grad_accum", "lr", "beta", "last_k")),
                          []).append(r)
    described = [f"{steps} optimiser steps of {batch} x {accum} rows at lr {lr}, beta {beta}, t* among the last "
                 f"{last_k} of the DDIM steps (training minutes: "
                 + ", ".join(f"`{r['reg']}` {r['train_seconds'] / 60:.1f}" for r in group) + ")"
                 for (steps, batch, accum, lr, beta, last_k), group in groups.items()]
    lines += ["", f"{shot['images']} images per row: the same test products, seeds and prompts. RFFT runs: "
              + "; ".join(described) + "."]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path = PLOT) -> None:
    """Early-signal AUC by fraction of the steps, and availability by ControlNet (oracle vs RFNet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shot = next((r for r in rows if r["kind"] == "single_shot"), None)
    if shot is None:
        return
    runs = [("base", shot)] + [(f"{r['reg']}\n{r['settings']['steps']}", r) for r in rows if r["kind"] == "rfft"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    fractions = [float(f) for f in shot["rfnet_auc_early"]] + [1.0]
    aucs = [shot["rfnet_auc_early"][f] for f in shot["rfnet_auc_early"]] + [shot["rfnet_auc_final"]]
    left.plot(fractions, aucs, marker="o")
    left.axhline(0.5, color="grey", linestyle=":")
    left.set(xlabel="share of the DDIM steps done", ylabel="AUC vs final oracle verdict", ylim=(0.3, 1.0),
             title="Early signal")
    x = range(len(runs))
    left_bars = [r["oracle_available"] for _, r in runs]
    right_bars = [r["rfnet_available"] for _, r in runs]
    right.bar([i - 0.2 for i in x], left_bars, width=0.4, label="oracle")
    right.bar([i + 0.2 for i in x], right_bars, width=0.4, label="RFNet")
    right.set_xticks(list(x), [name for name, _ in runs])
    right.set(ylabel="available, one attempt", ylim=(0, 1), title="RFFT")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def block(name: str) -> str:
    """docs/method.md's block ``name``: ``judges``, ``loop``, ``rfft`` (method.json) or ``placement``
    (judge_placement.json)."""
    if name == "placement":
        from benchmarks.studies.method.judge_placement import table

        path = RESULTS.parent / "judge_placement.json"
        if not path.is_file():
            return "Not measured yet: run `python -m benchmarks.studies.method.judge_placement --work DIR --retrain`."
        result = json.loads(path.read_text())
        return f"From `benchmarks/studies/method/judge_placement.py`. {machine_line(result)}\n\n{table(result['rows'])}"
    sections = {"judges": judges_section, "loop": loop_section, "rfft": rfft_section}
    if name not in sections:
        raise ValueError(f"<!-- generated:method {name} -->: unknown block (known: {', '.join(sections)}, placement)")
    if not RESULTS.is_file():
        return "Not measured yet: run `python -m benchmarks.studies.method.method_bench --work DIR`."
    data = json.loads(RESULTS.read_text())
    machine = data["machine"]
    header = (f"Measured {machine['date']} on {machine['cpu_count']} CPU cores ({machine['processor']}), "
              f"`python -m benchmarks.studies.method.method_bench`.")
    return header + "\n\n" + sections[name](data["rows"])


def render(results: Path = RESULTS) -> None:
    """Draw docs/method.png from ``results`` and re-render the docs' blocks."""
    plot(json.loads(results.read_text())["rows"])
    render_docs()
    print(f"wrote {PLOT} and re-rendered the docs")


if __name__ == "__main__":
    render()
