"""docs/method.md's generated blocks, from benchmarks/results/method.json and its per-image records.

    python -m benchmarks.studies.method.method_report     # re-render the docs from the results

:func:`write_report` gathers the method bench's parts into ``benchmarks/results/method.json``
(tables computed from the per-image records, intervals by product) and copies the records beside
it. docs/render.py renders each ``<!-- generated:method NAME -->`` block through :func:`block`:
``judges``, ``curve``, ``loop`` (method.json) and ``rfft`` (method_v1.json: RFFT as measured under
the first protocol, until the RFFT study reruns under this one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.common import ROOT, machine_line, markdown_table, render_docs, write_results
from benchmarks.studies.method.records import read_records
from benchmarks.studies.method.tables import base_rate, judge_row

RESULTS = ROOT / "benchmarks" / "results"
SHORT = {"Available": "Avail.", "Space Mismatch": "Space", "Size Mismatch": "Size", "Indistinctiveness": "Indist.",
         "Shape Hallucination": "Halluc."}
# The paper's AP of Available vs not on 1,000 RF1M test images, by judge (Du et al., ECCV 2024).
PAPER_AP = {"RFNet": 87.58, "without product image": 81.17, "without caption": 84.53, "without depth": 85.31,
            "without saliency": 83.91, "ResNet only (generated image)": 77.29}
PAPER_AVA = {"shipped": ("56.4 %", "70.1 %"), "none": ("84.7 % (ReFL)", "84.9 %"), "cc": ("85.5 %", "86.3 %")}


def write_report(work: Path, settings: dict) -> Path:
    """benchmarks/results/method.json from the parts in ``work`` (and the records copied beside it)."""
    parts = {name: json.loads((work / f"{name}.json").read_text())
             for name in ("data", "pretrain", "recipe", "curve", "judges", "loop") if (work / f"{name}.json").is_file()}
    rows = []
    if "data" in parts:
        rows.append({"kind": "rf_mini", **parts["data"]["rf_mini"]})
    if "pretrain" in parts:
        rows.append({"kind": "pretrain", **parts["pretrain"]})
    if "recipe" in parts:
        rows.append({"kind": "recipe", **parts["recipe"]})
    if "curve" in parts:
        rows += [{"kind": "curve", **row} for row in parts["curve"]["rows"]]
    if "judges" in parts:
        test = read_records(work / "records_test.jsonl")
        variants = parts["judges"]["variants"]
        reference = [j["judge"] for j in variants["RFNet"]]
        rows.append({"kind": "base_rate", "split": "test", **base_rate(test)})
        for name, judges in variants.items():
            seconds = [j["train_seconds"] for j in judges if "train_seconds" in j]
            rows.append({"kind": "judge", "split": "test", "train_seconds": seconds,
                         **judge_row(test, name, [j["judge"] for j in judges], reference)})
        for split in ("val", "test"):
            shutil.copyfile(work / f"records_{split}.jsonl", RESULTS / f"method_records_{split}.jsonl")
    if "loop" in parts:
        rows.append({"kind": "loop", **parts["loop"]})
    seconds = {name: part.get("seconds") for name, part in parts.items()}
    return write_results("method", rows, settings, summary={"part_seconds": seconds})


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _interval(low: float, high: float, percent: bool = False) -> str:
    return f"{100 * low:.1f}-{100 * high:.1f}" if percent else f"{low:.3f}-{high:.3f}"


def judges_section(rows: list[dict]) -> str:
    judges = [r for r in rows if r["kind"] == "judge"]
    if not judges:
        return "Not measured yet under this protocol."
    shown = []
    for r in judges:
        versus = r.get("ap_vs_reference")
        shown.append({
            "judge": r["judge"], "seeds": r["seeds"],
            "ap": f"{r['ap']:.3f} ({_interval(*r['ap_interval'])})",
            "per_seed": ", ".join(f"{v:.3f}" for v in r["ap_per_seed"]),
            "versus": "-" if versus is None else f"{versus['difference']:+.3f} ({versus['low']:+.3f} to "
                                                  f"{versus['high']:+.3f}; p {versus['p']:.3f})",
            "accuracy": f"{_pct(r['accuracy'])} ({_interval(*r['accuracy_interval'], percent=True)})",
            "paper": PAPER_AP.get(r["judge"], "-"),
            "minutes": f"{sum(r['train_seconds']) / 60 / max(1, len(r['train_seconds'])):.0f}" if r["train_seconds"] else "-",
        })
    base = next(r for r in rows if r["kind"] == "base_rate")
    data = next((r for r in rows if r["kind"] == "rf_mini"), None)
    lines = [markdown_table(shown, [("judge", "judge"), ("seeds", "seeds"), ("ap", "AP, Available (95 % CI)"),
                                    ("per_seed", "AP per seed"), ("versus", "AP - RFNet's, paired (95 % CI; p)"),
                                    ("accuracy", "accuracy, 5 classes (95 % CI)"), ("paper", "paper AP"),
                                    ("minutes", "train min / seed")])]
    if data is not None:
        test = data["splits"]["test"]
        lines += ["", f"Test split: {test['images']} images of {test['products']} products; the share of Available "
                      f"(the AP of a judge that guesses) is {_pct(base['share'])} "
                      f"({_interval(*base['interval'], percent=True)}). Intervals resample products (2,000 draws); "
                      "a variant's AP is the mean of its seeds' APs, each seed scored on the same draws. The paper's AP "
                      "is on 1,000 RF1M test images, in percent."]
    return "\n".join(lines)


def _recipe_line(recipe: dict) -> str:
    """The recipe part's candidates with their validation AP, and the one kept."""
    def ap(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    tried = ", ".join(f"{c['epochs']} epochs of {c['batch_size']} at lr {c['lr']:g}: AP {ap(c['val_ap'])}"
                      for c in recipe["candidates"])
    kept = recipe["chosen"]
    return (f"The fine-tuning recipe, chosen on validation products (seed 0): {tried}; kept: {kept['epochs']} "
            f"epochs of {kept['batch_size']} at lr {kept['lr']:g}.")


def curve_section(rows: list[dict]) -> str:
    curve = [r for r in rows if r["kind"] == "curve"]
    if not curve:
        return "Not measured yet under this protocol."
    shown = [{"fraction": f"{100 * r['fraction']:.0f} %", "ap": f"{r['ap']:.3f} ({_interval(*r['ap_interval'])})",
              "per_seed": ", ".join(f"{v:.3f}" for v in r["ap_per_seed"]),
              "accuracy": f"{_pct(r['accuracy'])}"} for r in curve]
    recipe = next((r for r in rows if r["kind"] == "recipe"), None)
    chosen = "" if recipe is None else _recipe_line(recipe) + "\n\n"
    return ("Validation products only (the curve steers choices, so it never reads test).\n\n" + chosen
            + markdown_table(shown, [("fraction", "training products"), ("ap", "AP, Available (95 % CI)"),
                                     ("per_seed", "AP per seed"), ("accuracy", "accuracy, 5 classes")]))


def loop_section(rows: list[dict]) -> str:
    loop = next((r for r in rows if r["kind"] == "loop"), None)
    if loop is None:
        return "Not measured yet under this protocol."
    test = loop["test"]
    shown = [{"arm": r["arm"], "requests": r["requests"],
              "available": f"{_pct(r['available'])} ({_interval(*r['available_interval'], percent=True)})",
              "attempts": f"{r['mean_attempts']:.2f}", "exhausted": _pct(r["exhausted"])} for r in test["rows"]]
    gain, gap = test["judge_minus_one"], test["oracle_minus_judge"]
    chosen = ", ".join(f"{float(t):g}: {_pct(v)}" for t, v in loop["threshold_on_val"].items())
    return "\n".join([
        markdown_table(shown, [("arm", "arm"), ("requests", "requests"),
                               ("available", "oracle: returned image Available (95 % CI)"),
                               ("attempts", "attempts (mean)"), ("exhausted", "used every attempt")]),
        "",
        f"Paired on the same requests: RFNet's loop - one attempt **{100 * gain['difference']:+.1f} points** "
        f"({100 * gain['low']:+.1f} to {100 * gain['high']:+.1f}; p {gain['p']:.3f}); the oracle's loop - RFNet's "
        f"**{100 * gap['difference']:+.1f} points** ({100 * gap['low']:+.1f} to {100 * gap['high']:+.1f}). RFNet's "
        f"arm averages its {test['rows'][1]['judges']} seeds. Its threshold, p(Available) >= "
        f"{loop['threshold']:g}, was chosen on validation products (the arm's availability there: {chosen}).",
    ])


def rfft_section(result: dict) -> str:
    rows = result["rows"]
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
                     f"{r['rfnet_p_available_mean']:.3f} | {r.get('seed_distance'):.4f} "
                     f"({'n/a' if ratio is None else f'{ratio:.2f}'}) | {shares} | {paper} |")
    lines += ["", f"{shot['images']} images per row (45 test products of the first RF-mini, one seed per training run; "
              "the 150-step setting was chosen after looking at these test scores)."]
    return "\n".join(lines)


def block(name: str) -> str:
    """docs/method.md's block ``name``: ``judges``, ``curve``, ``loop`` (method.json), ``evidence``
    (judge_evidence.json), ``rfft`` (method_v1.json, the first protocol) or ``rfft-sweep``, ``rfft-test``
    (rfft.json, :mod:`benchmarks.studies.rfft.report`)."""
    sections = {"judges": judges_section, "curve": curve_section, "loop": loop_section}
    if name == "evidence":
        from benchmarks.studies.method import judge_evidence

        path = RESULTS / "judge_evidence.json"
        if not path.is_file():
            return "Not measured yet: run `python -m benchmarks.studies.method.judge_evidence --work DIR`."
        result = json.loads(path.read_text())
        return (f"{machine_line(result)} `python -m benchmarks.studies.method.judge_evidence`.\n\n"
                + judge_evidence.block(result))
    if name in ("rfft-sweep", "rfft-test"):
        from benchmarks.studies.rfft import report as rfft_report

        return rfft_report.block(name)
    if name == "rfft":
        path = RESULTS / "method_v1.json"
        if not path.is_file():
            return "Not measured yet."
        result = json.loads(path.read_text())
        return f"{machine_line(result)} First protocol.\n\n{rfft_section(result)}"
    if name not in sections:
        raise ValueError(f"<!-- generated:method {name} -->: unknown block (known: {', '.join(sections)}, evidence, rfft, rfft-sweep, rfft-test)")
    path = RESULTS / "method.json"
    if not path.is_file():
        return "Not measured yet: run `python -m benchmarks.studies.method.method_bench --work DIR`."
    result = json.loads(path.read_text())
    return f"{machine_line(result)} `python -m benchmarks.studies.method.method_bench`.\n\n" + sections[name](result["rows"])


def render() -> None:
    """Re-render the docs' blocks."""
    render_docs()
    print("re-rendered the docs")


if __name__ == "__main__":
    render()
