"""``rfad demo``'s report.md: per product, every attempt's image with RFNet's verdict (and the
oracle's, in the miniature world) side by side, then what the loop returned."""

from __future__ import annotations

import os
from pathlib import Path

from rfad.contract import CLASS_NAMES

AVAILABLE = CLASS_NAMES[0]


def judged(probabilities: dict, available: bool) -> str:
    """RFNet's verdict in words: Available, or the defect it finds most likely."""
    if available:
        return f"{AVAILABLE} ({probabilities[AVAILABLE]:.2f})"
    defect = max(CLASS_NAMES[1:], key=lambda name: probabilities[name])
    return f"not available: {defect} ({probabilities[defect]:.2f}; p(Available) {probabilities[AVAILABLE]:.2f})"


def _link(path: str, folder: Path) -> str:
    return os.path.relpath(path, folder)


def _header(report: dict) -> list[str]:
    if report["random_weights"]:
        about = ("Weights are RANDOM (tiny zoo): the backgrounds are noise and RFNet's verdicts mean nothing; the "
                 "pipeline, export, server and protocol are the real ones.")
    elif report["world"]:
        test = report["judge_test_split"]
        about = ("The miniature world (rfad/miniworld): a generator trained on this machine's CPU paints 128 px ad "
                 "scenes around each product, and an RFNet trained on RF-mini judges them (on RF-mini's test split: "
                 f"accuracy {test['accuracy']:.2f} where the majority class scores {test['majority_baseline']:.2f}, "
                 f"AP {test['available_ap']:.2f} for Available; docs/method.md). The products are new to both. The "
                 "oracle, the miniature world's programmatic annotator, gives the true label of every image "
                 "(docs/miniworld.md).")
    else:
        about = f"Models: {report['models']}"
    screening = ("" if report.get("screen_at") is None else
                 f" Early screening after {report['screen_at']:g} of the steps: a candidate whose preview scores "
                 f"p(Available) below {report['screen_threshold']:g} is replaced by the next seed.")
    return ["# rfad demo report", "", about, "",
            f"Canvas {report['size']} px, {report['steps']} DDIM steps, one candidate per attempt, up to "
            f"{report['max_attempts']} attempts, threshold {report['threshold']}.{screening}", ""]


def screened_at(column: dict) -> str:
    """The screening column's words for one candidate: screened out at step s with p, or how it finished."""
    if "step" in column:
        return f"screened out at step {column['step']} with p(Available) {column['p_available']:.2f}"
    return {"passed": "passed screening", "not screened": "not screened (its slot's refills were spent)"}.get(
        column.get("screening"), "")


def _product_section(request: dict, folder: Path, world: bool) -> list[str]:
    attempts = request["attempt_images"]
    screened = request.get("screened") or []
    # Every candidate the loop drew, in draw order: the finished ones (one per attempt) and those
    # early screening replaced (no image: they stopped at the screening step).
    columns = sorted(attempts + screened, key=lambda column: column["seed"])
    lines = [f"## {request['product']}: \"{request['prompt']}\"", "",
             f"![product]({_link(request['product_image'], folder)}) caption: {request['caption']!r}", ""]
    lines.append("| | " + " | ".join(f"attempt {c['attempt']}" + (" (screened)" if "step" in c else "")
                                      for c in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    lines.append("| image | " + " | ".join("–" if "step" in c else f"![attempt {c['attempt']}]({_link(c['image'], folder)})"
                                             for c in columns) + " |")
    if any(c.get("screening") for c in attempts) or screened:
        lines.append("| screening | " + " | ".join(screened_at(c) for c in columns) + " |")
    lines.append("| RFNet | " + " | ".join("–" if "step" in c else judged(c["probabilities"], c["available"])
                                           for c in columns) + " |")
    if world:
        lines.append("| oracle (truth) | " + " | ".join("–" if "step" in c else c["oracle"]["label"]
                                                        for c in columns) + " |")
    returned = request["returned_attempt"]
    outcome = ("judged Available" if request["available"]
               else f"none judged Available in {request['attempts']} attempts; the best returned, flagged not available")
    truth = f"; the oracle says {request['oracle']['label']}" if world else ""
    lines += ["", f"The loop returned attempt {returned}: {outcome}{truth}. {request['latency_s']} s.", ""]
    return lines


def _summary(report: dict) -> list[str]:
    requests = report["requests"]
    if not report["world"]:
        return []
    first = sum(r["attempt_images"][0]["oracle"]["label"] == AVAILABLE for r in requests)
    returned = sum(r["oracle"]["label"] == AVAILABLE for r in requests)
    screened = (f" Early screening replaced {sum(len(r.get('screened') or []) for r in requests)} candidates mid-loop."
                if report.get("screen_at") is not None else "")
    return ["## In sum", "",
            f"The oracle calls {first} of {len(requests)} first attempts Available and {returned} of the "
            f"{len(requests)} returned images, after {sum(r['attempts'] for r in requests)} attempts in all.{screened} "
            f"{len(requests)} products are an illustration, not a measurement: docs/method.md measures the same loop "
            "on RF-mini's held-out products.", ""]


def write_report(report: dict, path: Path) -> Path:
    folder = path.parent
    lines = _header(report)
    for request in report["requests"]:
        lines += _product_section(request, folder, report["world"])
    lines += _summary(report)
    lines.append("Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()))
    path.write_text("\n".join(lines) + "\n")
    return path
