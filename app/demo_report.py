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
    return ["# rfad demo report", "", about, "",
            f"Canvas {report['size']} px, {report['steps']} DDIM steps, one candidate per attempt, up to "
            f"{report['max_attempts']} attempts, threshold {report['threshold']}.", ""]


def _product_section(request: dict, folder: Path, world: bool) -> list[str]:
    attempts = request["attempt_images"]
    lines = [f"## {request['product']}: \"{request['prompt']}\"", "",
             f"![product]({_link(request['product_image'], folder)}) caption: {request['caption']!r}", ""]
    lines.append("| | " + " | ".join(f"attempt {a['attempt']}" for a in attempts) + " |")
    lines.append("|---|" + "---|" * len(attempts))
    lines.append("| image | " + " | ".join(f"![attempt {a['attempt']}]({_link(a['image'], folder)})"
                                             for a in attempts) + " |")
    lines.append("| RFNet | " + " | ".join(judged(a["probabilities"], a["available"]) for a in attempts) + " |")
    if world:
        lines.append("| oracle (truth) | " + " | ".join(a["oracle"]["label"] for a in attempts) + " |")
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
    return ["## In sum", "",
            f"The oracle calls {first} of {len(requests)} first attempts Available and {returned} of the "
            f"{len(requests)} returned images, after {sum(r['attempts'] for r in requests)} attempts in all. "
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
