"""Does the judge's evidence survive the generator? The same mini RFNet on drawn scenes, as drawn and after a VAE.

    python -m benchmarks.studies.method.judge_evidence --work DIR [--arms clean,vae]
        [--vae DIR] [--train 3000] [--val 900] [--steps 1000] [--seed 0]

RF-mini's judge stays far below the paper's (docs/method.md). This study separates the judge from
what it is shown. Drawn scenes of known class (:mod:`rfad.trainer.data.scenes`, their own seed
stream, balanced over the five classes) train the mini RFNet with the DRAWN class as the label,
in two arms:

- ``clean``: the scenes as drawn;
- ``vae``: the same scenes encoded and decoded by a generator's VAE (``--vae``: a diffusers VAE
  folder, a model set's ``sd15/vae`` or a ``rfad-train miniworld`` stage's; default the shipped
  generator's), the product pasted back: what every generated image goes through last.

The network, the schedule and the scenes are the same in both arms, so a gap between them is the
evidence the VAE erased. Depth and saliency are left out (``ablate``): their models read the same
pixels, and the question is what the image still shows. The caption is a constant for the same
reason. The oracle is also run on each arm's validation images, to show what a rule-based reader
still sees there (measured again, when the parts are gathered, for a part measured under other
rules than the oracle's current ones).

Each arm is one part, ``DIR/<arm>-steps<S>-train<N>-seed<K>.json``, skipped when present: a VAE
arm is named by its VAE's factor and the first 8 hex digits of its weights' SHA-256, so two
generators are two parts.
``benchmarks/results/judge_evidence.json`` gathers the parts, and docs/method.md's ``evidence``
block renders it. Intervals: 95 % bootstrap over the validation scenes (each is its own product).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results
from benchmarks.studies.method.stats import bootstrap_interval, share

# Scene streams of this study: disjoint from the generator's training scenes and the oracle checks.
TRAIN_SEED, VAL_SEED = 2603, 2604
BATCH, LR, WEIGHT_DECAY, WARMUP = 32, 1e-3, 0.01, 0.05
CAPTION_IDS = [0, 5, 6, 2]  # a constant caption: the study asks what the image shows


def draw_split(n: int, seed: int) -> list:
    """``n`` drawn scenes, classes in turn (balanced), each from its own seed ``[seed, index]``."""
    from rfad.contract import CLASS_NAMES
    from rfad.trainer.api import draw_scene

    return [draw_scene(CLASS_NAMES[i % len(CLASS_NAMES)], np.random.default_rng([seed, i])) for i in range(n)]


def vae_folder(vae: Path | None) -> Path:
    """The VAE folder of the arm: ``vae``, or the shipped generator's."""
    from rfad.miniworld import model_dir
    from rfad.models.model_set import ModelSet

    return Path(vae) if vae is not None else ModelSet.resolve(model_dir()).sd / "vae"


def vae_name(vae: Path | None) -> tuple[str, dict]:
    """The part name of a VAE arm, and what identifies that VAE (its factor and weights' SHA-256)."""
    from benchmarks.studies.miniworld.report import vae_identity

    identity = vae_identity(vae_folder(vae))
    return f"vae-{identity['tag']}", {"vae": str(vae or "shipped"), "factor": identity["factor"],
                                      "vae_sha256": identity["vae_sha256"]}


def arm_images(scenes: list, vae) -> np.ndarray:
    """uint8 [N, 128, 128, 3]: the scenes as drawn (``vae`` None), or through ``vae`` with the product pasted back."""
    images = np.stack([scene.image for scene in scenes])
    if vae is None:
        return images
    from rfad.canvas import paste_back
    from rfad.trainer.api import reconstruct

    return np.stack([paste_back(image, scene.canvas) for image, scene in zip(reconstruct(vae, images), scenes)])


def oracle_agreement(images: np.ndarray, scenes: list) -> list[bool]:
    """Per image: whether the oracle's label is the drawn one."""
    from rfad.miniworld.oracle import label_ad

    return [label_ad(image, np.asarray(scene.canvas.product_rgba), scene.canvas.product_alpha).label == scene.label
            for image, scene in zip(images, scenes)]


def _rules() -> list[list[str]]:
    """The oracle's rule table, as the oracle-generated study fingerprints it."""
    from benchmarks.studies.miniworld.oracle_generated import rules_fingerprint

    return rules_fingerprint()


def oracle_columns(images: np.ndarray, scenes: list) -> dict:
    """The oracle's agreement with the drawn class on an arm's validation images: overall (with its interval)
    and per class, and the rules it was measured under."""
    from rfad.contract import CLASS_NAMES

    agreed = oracle_agreement(images, scenes)
    return {"oracle_agreement": float(np.mean(agreed)),
            "oracle_agreement_interval": bootstrap_interval(share(agreed), [str(i) for i in range(len(agreed))]),
            "oracle_per_class": {name: float(np.mean([a for a, s in zip(agreed, scenes) if s.label == name]))
                                 for name in CLASS_NAMES},
            "oracle_rules": _rules()}


def refresh_oracle(row: dict) -> dict:
    """``row`` with its oracle columns measured again under the current rules, if they were measured under others
    (the judge's columns do not depend on the oracle: it trains on the drawn class)."""
    if row.get("oracle_rules") == _rules():
        return row
    from diffusers import AutoencoderKL

    scenes = draw_split(row["val"], VAL_SEED)
    vae = None if row["arm"] == "clean" else AutoencoderKL.from_pretrained(
        vae_folder(None if row["vae"] == "shipped" else Path(row["vae"]))).eval()
    return {**row, **oracle_columns(arm_images(scenes, vae), scenes)}


class Fit:
    """The mini RFNet (128 px, depth and saliency ablated) trained on one arm's images with the drawn labels."""

    def __init__(self, seed: int, steps: int):
        import torch

        from rfad.models.rfnet import RFNet, tiny_rfnet_config

        torch.manual_seed(seed)
        config = tiny_rfnet_config("mini")
        config.image_size, config.ablate = 128, ["depth", "saliency"]
        self.model = RFNet(config)
        self.optimiser = torch.optim.AdamW(self.model.parameters(), LR, weight_decay=WEIGHT_DECAY)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimiser, LR, total_steps=steps, pct_start=WARMUP)
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def inputs(products, images):
        """RFNet's six inputs for uint8 [B, H, W, 3] product canvases and images; depth and saliency zero."""
        import torch

        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
        n, side = len(images), images.shape[1]
        zero = torch.zeros(n, 1, side, side)
        ids = torch.tensor([CAPTION_IDS]).expand(n, -1)
        return to(products), to(images), zero, zero, ids, torch.ones_like(ids)

    def step(self, products, images, labels) -> float:
        """One AdamW step on a random batch (half of the steps mirrored: every class is left-right symmetric)."""
        import torch
        import torch.nn.functional as F

        picks = torch.randint(0, len(labels), (BATCH,), generator=self.generator).numpy()
        batch_products, batch_images = products[picks], images[picks]
        if torch.rand(1, generator=self.generator) < 0.5:
            batch_products, batch_images = batch_products[:, :, ::-1], batch_images[:, :, ::-1]
        logits = self.model(*self.inputs(batch_products, batch_images))
        loss = F.cross_entropy(logits, torch.as_tensor(labels[picks]))
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.schedule.step()
        return loss.item()

    def probabilities(self, products, images) -> np.ndarray:
        """float [N, 5] class probabilities (eval mode)."""
        import torch

        self.model.eval()
        with torch.no_grad():
            out = [self.model(*self.inputs(products[i:i + 64], images[i:i + 64])).softmax(-1).numpy()
                   for i in range(0, len(images), 64)]
        self.model.train()
        return np.concatenate(out)


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and Available AP (Available vs the rest) with 95 % bootstrap intervals, and the confusion."""
    from rfad.trainer.api import average_precision

    ids = [str(i) for i in range(len(labels))]
    correct = probabilities.argmax(1) == labels
    available = probabilities[:, 0].tolist()
    positives = (labels == 0).tolist()

    def ap(items):
        picked = [positives[i] for i in items]
        return average_precision([available[i] for i in items], picked) if any(picked) else None

    confusion = np.zeros((5, 5), int)
    np.add.at(confusion, (labels, probabilities.argmax(1)), 1)
    return {"accuracy": float(correct.mean()), "accuracy_interval": bootstrap_interval(share(correct.tolist()), ids),
            "available_ap": float(ap(range(len(labels)))), "available_ap_interval": bootstrap_interval(ap, ids),
            "base_rate": float(np.mean(positives)), "confusion": confusion.tolist()}


def run_arm(arm: str, vae: Path | None, args) -> dict:
    """Train and measure one arm (``clean`` or ``vae``, through the VAE folder ``vae``) -> its part."""
    start = time.perf_counter()
    model = None
    if arm == "vae":
        from diffusers import AutoencoderKL

        model = AutoencoderKL.from_pretrained(vae_folder(vae)).eval()
    train_scenes, val_scenes = draw_split(args.train, TRAIN_SEED + 10 * args.seed), draw_split(args.val, VAL_SEED)
    from rfad.contract import CLASS_NAMES

    data = {}
    for split, scenes in (("train", train_scenes), ("val", val_scenes)):
        data[split] = (np.stack([scene.canvas.init_image for scene in scenes]), arm_images(scenes, model),
                       np.asarray([CLASS_NAMES.index(scene.label) for scene in scenes]))
    prepared_s = time.perf_counter() - start
    fit, log, losses = Fit(args.seed, args.steps), [], []
    for step in range(1, args.steps + 1):
        losses.append(fit.step(*data["train"]))
        if step % max(1, args.steps // 4) == 0:
            metrics = evaluate(fit.probabilities(*data["val"][:2]), data["val"][2])
            log.append({"step": step, "loss": float(np.mean(losses[-50:])), "val_accuracy": metrics["accuracy"],
                        "val_available_ap": metrics["available_ap"]})
            print(f"  {arm} step {step}/{args.steps}: loss {log[-1]['loss']:.3f}, val accuracy "
                  f"{metrics['accuracy']:.3f}, AP {metrics['available_ap']:.3f}", flush=True)
    return {"arm": arm, **metrics, "log": log, **oracle_columns(data["val"][1], val_scenes), "train": args.train, "val": args.val, "steps": args.steps, "seed": args.seed,
            "prepare_seconds": round(prepared_s, 1), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="Folder of the arms' parts.")
    parser.add_argument("--arms", default="clean,vae", help="Arms to run, of clean, vae.")
    parser.add_argument("--vae", type=Path, help="VAE folder of the vae arm [default: the shipped generator's sd15/vae].")
    parser.add_argument("--train", type=int, default=3000, help="Training scenes.")
    parser.add_argument("--val", type=int, default=900, help="Validation scenes (the measured ones).")
    parser.add_argument("--steps", type=int, default=1000, help="Optimiser steps of 32 scenes.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the training scenes, the weights and the batches.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    arms = [a for a in args.arms.split(",") if a]
    if unknown := sorted(set(arms) - {"clean", "vae"}):
        parser.error(f"--arms: unknown {unknown}; expected clean, vae")
    args.work.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        name, identity = (vae_name(args.vae) if arm == "vae" else ("clean", {}))
        path = args.work / f"{name}-steps{args.steps}-train{args.train}-seed{args.seed}.json"
        if path.is_file():
            print(f"{path} exists, skipped")
            continue
        row = {**run_arm(arm, args.vae, args), "name": name, **identity}
        path.write_text(json.dumps(row, indent=2) + "\n")
    rows = []
    for part in sorted(args.work.glob("*.json")):
        row = json.loads(part.read_text())
        if (fresh := refresh_oracle(row)) is not row:
            part.write_text(json.dumps(fresh, indent=2) + "\n")
        rows.append(fresh)
    path = write_results("judge_evidence", rows, {"work": str(args.work), "batch": BATCH, "lr": LR,
                                                  "schedule": "one-cycle", "weight_decay": WEIGHT_DECAY})
    print(f"wrote {path}")
    from benchmarks.studies.method.method_report import render

    render()


if __name__ == "__main__":
    main()


def _arm_label(row: dict) -> str:
    if row["arm"] == "clean":
        return "drawn scenes"
    # Read against the generator shipped now: a row measured on an earlier shipped VAE is named by its hash only.
    shipped = ", the shipped generator's" if row["vae_sha256"] == vae_name(None)[1]["vae_sha256"] else ""
    return f"after the VAE (factor {row['factor']}, {row['vae_sha256'][:8]}{shipped})"


def _pct(value: float, interval=None) -> str:
    text = f"{100 * value:.1f} %"
    return text + (f" ({100 * interval[0]:.0f}-{100 * interval[1]:.0f})" if interval else "")


def block(result: dict) -> str:
    """docs/method.md's ``evidence`` block: the headline table and the per-class table of every arm."""
    from rfad.contract import CLASS_NAMES

    rows = sorted(result["rows"], key=lambda r: (r["steps"], r["arm"] != "clean", -r.get("factor", 0), r["seed"]))
    lines = ["| images | scenes (train / val) | steps | judge accuracy | judge Available AP | base rate | "
             "oracle agrees with the drawn class | minutes |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_arm_label(r)} | {r['train']} / {r['val']} | {r['steps']} | "
                     f"{_pct(r['accuracy'], r['accuracy_interval'])} | "
                     f"{r['available_ap']:.3f} ({r['available_ap_interval'][0]:.3f}-{r['available_ap_interval'][1]:.3f}) | "
                     f"{_pct(r['base_rate'])} | {_pct(r['oracle_agreement'], r['oracle_agreement_interval'])} | "
                     f"{r['seconds'] / 60:.1f} |")
    lines += ["", "Per drawn class: the judge's recall / the oracle's agreement, on the validation scenes.", "",
              "| images | " + " | ".join(CLASS_NAMES) + " |", "|---|" + "---|" * len(CLASS_NAMES)]
    for r in rows:
        confusion = np.asarray(r["confusion"])
        recall = confusion.diagonal() / confusion.sum(1).clip(min=1)
        cells = [f"{100 * recall[c]:.0f} % / {100 * r['oracle_per_class'][name]:.0f} %"
                 for c, name in enumerate(CLASS_NAMES)]
        lines.append(f"| {_arm_label(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
