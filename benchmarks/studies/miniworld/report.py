"""docs/miniworld.md's generated blocks, from the oracle's rules and benchmarks/results/*.json.

    python -m benchmarks.studies.miniworld.report     # draw the contact sheet, then re-render the docs

docs/render.py renders each ``<!-- generated:miniworld NAME -->`` block through :func:`block`:
``oracle-rules`` (from :data:`rfad.miniworld.oracle.RULES`), ``oracle-agreement`` (from
oracle_agreement.json, written by oracle_agreement.py), ``generator-step`` (from
miniworld_step.json, written by generator_step.py), ``generator-training`` (from the shipped
generator's training record, written by ``rfad-train miniworld``) and ``generator-scenes`` (from
miniworld_generated.json, written by generated_scenes.py). The prose around them is written by
hand. :func:`render` also draws docs/miniworld-scenes.png, eight scenes of each class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import RESULTS, ROOT, markdown_table, render_docs
from rfad.contract import CLASS_NAMES
from rfad.miniworld import oracle, training_record

DOCS = ROOT / "docs"
SHORT = {"Available": "Avail.", "Space Mismatch": "Space", "Size Mismatch": "Size", "Indistinctiveness": "Indist.",
         "Shape Hallucination": "Halluc."}


def rules_section() -> str:
    rows = [{"rank": i + 1, "label": rule.label, "measures": rule.measures, "fires": rule.fires_when}
            for i, rule in enumerate(sorted(oracle.RULES, key=lambda r: oracle.PRECEDENCE.index(r.label)))]
    table = markdown_table(rows, [("rank", "precedence"), ("label", "defect"), ("measures", "measurement"),
                                  ("fires", "fires when")])
    return (f"{table}\n\nThe label is the first defect in precedence order whose rule fires; Available when none "
            f"does. {oracle.PRECEDENCE_REASON} Once a rule fires, the measurements of the rules below it are not "
            "trusted.")


def vae_identity(folder: Path) -> dict:
    """What tells two generators' VAEs apart: the latent factor and the weights' SHA-256, and a short ``tag``
    (``f8-1a2b3c4d``) that part files and tables carry."""
    from rfad.miniworld import file_sha256

    config = json.loads((Path(folder) / "config.json").read_text())
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    [weights] = Path(folder).glob("*.safetensors")
    digest = file_sha256(weights)
    return {"factor": factor, "vae_sha256": digest, "tag": f"f{factor}-{digest[:8]}"}


def generator_identity(models: Path | None) -> dict:
    """:func:`vae_identity` of a generator model set's VAE (``models`` None: the shipped generator), with its path."""
    from rfad.miniworld import model_dir
    from rfad.models.model_set import ModelSet

    return {"models": str(models or "shipped"), **vae_identity(ModelSet.resolve(models or model_dir()).sd / "vae")}


def _generator(row: dict) -> str:
    generator = row.get("generator")
    return f"factor {generator['factor']} ({generator['vae_sha256'][:8]})" if generator else "shipped"


def _machine_line(result: dict) -> str:
    m = result["machine"]
    return f"Measured {m['date']} on {m['cpu_count']} CPU cores ({m['processor']}), torch {m['torch']}, " \
           f"diffusers {m.get('diffusers')}, {result['settings'].get('threads', '?')} torch threads."


def agreement_section(result: dict) -> str:
    parts = [_machine_line(result).split(", torch")[0] + f"; seed {result['settings']['seed']}, "
             f"{result['settings']['n_per_class']} samples per class and source "
             f"(`python -m benchmarks.studies.miniworld.oracle_agreement`)."]
    summary = [{"source": row["source"], **{SHORT[name]: f"{100 * row['per_class'][name]:.1f} %" for name in CLASS_NAMES},
                "seconds": row["seconds"]} for row in result["rows"]]
    parts.append("Agreement per constructed class (the share of each class the oracle labels the same):\n\n"
                 + markdown_table(summary, [("source", "source")] + [(SHORT[n], n) for n in CLASS_NAMES]
                                  + [("seconds", "s (draw + label)")]))
    for row in result["rows"]:
        matrix = [{"label": name, **{SHORT[other]: row["confusion"][i][j] for j, other in enumerate(CLASS_NAMES)}}
                  for i, name in enumerate(CLASS_NAMES)]
        parts.append(f"**{row['source']}**: {row['description']}. Rows: constructed label; columns: the oracle's.\n\n"
                     + markdown_table(matrix, [("label", "constructed \\ oracle")] + [(SHORT[n], SHORT[n]) for n in CLASS_NAMES]))
        if row["variants"]:
            variants = [{"variant": key, "n": n, "agree": f"{100 * agreed / n:.1f} %"}
                        for key, (n, agreed) in row["variants"].items()]
            parts.append(f"Per drawn variant ({row['source']}):\n\n"
                         + markdown_table(variants, [("variant", "class / variant"), ("n", "scenes"), ("agree", "agreement")]))
        if row["misses"]:
            first = row["misses"][0]
            parts.append(f"First disagreement ({row['source']}, {first['label']} / {first['variant']} #{first['index']}):\n\n"
                         "```\n" + first["explanation"] + "\n```")
    return "\n\n".join(parts)


def generated_agreement_section(result: dict) -> str:
    """The oracle on generated-looking scenes: per construction and scene set, agreement per class with its
    95 % interval; per drawn variant for the report set."""
    parts = [_machine_line(result).split(", torch")[0].replace("Measured", "Written") + "; each row's date is its "
             "own (`python -m benchmarks.studies.miniworld.oracle_generated`)."]
    summary = [{"generator": _generator(row), "construction": row["construction"], "set": row["set"],
                "n": row["n_per_class"], "measured": row.get("measured", ""),
                **{SHORT[name]: f"{100 * row['per_class'][name]:.1f} % ({100 * row['intervals'][name][0]:.0f}-"
                                f"{100 * row['intervals'][name][1]:.0f})" for name in CLASS_NAMES},
                "seconds": row["seconds"]} for row in result["rows"]]
    parts.append("Agreement per constructed class, 95 % Wilson interval in brackets:\n\n"
                 + markdown_table(summary, [("generator", "generator VAE"), ("construction", "construction"), ("set", "set"),
                                            ("n", "scenes / class"), ("measured", "measured")]
                                  + [(SHORT[n], n) for n in CLASS_NAMES] + [("seconds", "s")]))
    for row in result["rows"]:
        if row["set"] != "report":
            continue
        variants = [{"variant": key, "n": n, "agree": f"{100 * agreed / n:.1f} %"}
                    for key, (n, agreed) in row["variants"].items()]
        parts.append(f"Per drawn variant ({_generator(row)}, {row['construction']}, report set): {row['description']}.\n\n"
                     + markdown_table(variants, [("variant", "class / variant"), ("n", "scenes"), ("agree", "agreement")]))
    return "\n\n".join(parts)


def step_section(result: dict) -> str:
    rows = [{**row, "step": f"{row['step_s']:.3f}", "rate": f"{row['samples_per_s']:.1f}",
             "params": f"{row['params_m']:.2f}", "mb": f"{row['size_mb']:.1f}",
             "at": f"{row.get('side', result['settings']['side'])} px"} for row in result["rows"]]
    return (_machine_line(result) + " One AdamW step, forward + backward "
            f"(`python -m benchmarks.studies.miniworld.generator_step`, mean of {result['settings']['repeats']} steps after "
            "2 warm-up steps):\n\n"
            + markdown_table(rows, [("component", "model"), ("channels", "block channels"), ("at", "images"),
                                    ("batch", "batch"), ("params", "params (M)"), ("mb", "fp32 MB"),
                                    ("step", "s / step"), ("rate", "samples / s")])
            + f"\n\nThe frozen tiny CLIP text encoder (the zoo's): {result['settings']['text_encoder_params_m']:.3f} M "
            f"parameters, {result['settings']['text_encoder_mb']:.2f} MB.")


def training_section(record: dict) -> str:
    settings, phases = record["settings"], record["losses"]
    rows = []
    for name, label in (("vae", "VAE"), ("unet", "UNet" + (" + text encoder" if settings["text_encoder"] == "train"
                                                          else "")), ("controlnet", "ControlNet (UNet frozen)")):
        curve = phases[name]["curve"]
        extra = f", {settings['vae_crop']} px crops" if name == "vae" else ""
        rows.append({"model": label, "params": f"{record['parameters'][name] / 1e6:.2f}",
                     "steps": phases[name]["steps"], "batch": f"{settings[name + '_batch']}{extra}",
                     "lr": settings[name + "_lr"], "first": curve[0]["loss"], "last": curve[-1]["loss"],
                     "minutes": f"{phases[name]['seconds'] / 60:.1f}"})
    table = markdown_table(rows, [("model", "model"), ("params", "params (M)"), ("steps", "steps"),
                                  ("batch", "batch"), ("lr", "peak lr"), ("first", "loss, first 50 steps"),
                                  ("last", "loss, last 50 steps"), ("minutes", "minutes")])
    timings = record["timings_s"]
    check = record["vae"]["reconstruction_check"]
    labels = ", ".join(f"{name} {count}" for name, count in record["scenes"]["labels"].items())
    return (f"`{' '.join(['rfad-train'] + record['command'][1:])}`, seed {record['seed']}, started "
            f"{record['started']} on {record['machine']['processor']} with {record['machine']['torch_threads']} torch "
            f"threads (torch {record['machine']['torch']}, diffusers {record['machine']['diffusers']}): "
            f"**{record['wall_minutes']} minutes** wall time, **{record['weights_mb']} MB** of files.\n\n"
            f"{record['scenes']['n']} scenes ({labels}) drawn in {timings['draw_scenes_s'] / 60:.1f} min; "
            f"latents of all of them encoded once in {timings['encode_s'] / 60:.1f} min (VAE scaling factor "
            f"{record['vae']['scaling_factor']:.4f}).\n\n" + table + "\n\n"
            f"The oracle on the VAE's reconstructions of {check['n_per_class']} fresh scenes per class (product pasted "
            "back), the share labelled as drawn: "
            + ", ".join(f"{name} {100 * share:.1f} %" for name, share in check["per_class"].items())
            + f" ({timings['vae_check_s']:.0f} s).")


def scenes_section(result: dict) -> str:
    row, settings = result["rows"][0], result["settings"]
    rates = markdown_table([{**{SHORT[n]: f"{100 * row['rates'][n]:.1f} %" for n in CLASS_NAMES}, "n": row["images"]}],
                           [("n", "images")] + [(SHORT[n], n) for n in CLASS_NAMES])
    matrix = markdown_table(
        [{"prompt": name, "n": sum(row["by_prompt"][name].values()),
          **{SHORT[other]: row["by_prompt"][name][other] for other in CLASS_NAMES}} for name in CLASS_NAMES],
        [("prompt", "prompt drawn for \\ oracle"), ("n", "images")] + [(SHORT[n], SHORT[n]) for n in CLASS_NAMES])
    fired = ", ".join(f"{name} {100 * share:.1f} %" for name, share in row["fired"].items())
    return (_machine_line(result).split(", torch")[0] + f": {row['images']} held-out products (request seed "
            f"{settings['seed']}), one image each, {settings['steps']} DDIM steps, guidance {settings['guidance']}, "
            f"request prompts with Available share {settings['available_share']}; {row['seconds'] / 60:.1f} min "
            "(`python -m benchmarks.studies.miniworld.generated_scenes`).\n\nSingle-shot oracle verdicts:\n\n" + rates
            + "\n\nBy the class of the scene each request's prompt was drawn from (the prompt names the wall, table, "
            "light and reference object of that scene, never its defect):\n\n" + matrix
            + f"\n\nShare of images on which each rule fires (several may): {fired}."
            + _fidelity_line(row.get("prompt_fidelity")))


def _fidelity_line(fidelity: dict | None) -> str:
    """Prompt fidelity (trainer/data/fidelity.py) of a generated-scenes run, when it was measured."""
    if not fidelity:
        return ""
    shown = ", ".join(f"{name} {100 * fidelity[name]:.1f} %" for name in ("wall", "table", "reference")
                      if fidelity.get(name) is not None)
    return (f"\n\nPrompt fidelity, the share of images showing what their prompt names (read back from the image): "
            f"{shown}; everything named {100 * fidelity['faithful']:.1f} %.")


def contact_sheet(path: Path, per_class: int = 8, seed: int = 5) -> None:
    """``per_class`` scenes of every class, one row per class (CLASS_NAMES order)."""
    from rfad.trainer.api import draw_scene

    gap = 2
    sheet = Image.new("RGB", (per_class * (128 + gap) - gap, len(CLASS_NAMES) * (128 + gap) - gap), "white")
    for c, label in enumerate(CLASS_NAMES):
        for j in range(per_class):
            scene = draw_scene(label, np.random.default_rng([seed, c, j]))
            sheet.paste(Image.fromarray(scene.image), (j * (128 + gap), c * (128 + gap)))
    sheet.save(path, format="PNG", optimize=True)


# block name -> (results file, the section from its contents, the command that writes it)
RESULT_SECTIONS = {
    "oracle-agreement": ("oracle_agreement", agreement_section, "oracle_agreement"),
    "oracle-generated": ("oracle_generated", generated_agreement_section, "oracle_generated"),
    "generator-step": ("miniworld_step", step_section, "generator_step"),
    "generator-scenes": ("miniworld_generated", scenes_section, "generated_scenes"),
}


def block(name: str) -> str:
    """docs/miniworld.md's block ``name`` (docs/render.py renders it)."""
    if name == "oracle-rules":
        return rules_section()
    if name == "generator-training":
        try:
            return training_section(training_record())
        except FileNotFoundError:
            return "Not trained yet in this checkout: `rfad-train miniworld --out DIR`."
    if name not in RESULT_SECTIONS:
        raise ValueError(f"<!-- generated:miniworld {name} -->: unknown block (known: oracle-rules, "
                         f"generator-training, {', '.join(RESULT_SECTIONS)})")
    file, section, script = RESULT_SECTIONS[name]
    path = RESULTS / f"{file}.json"
    if not path.is_file():
        return f"Not measured yet: run `python -m benchmarks.studies.miniworld.{script}`."
    return section(json.loads(path.read_text()))


def render() -> None:
    """Draw docs/miniworld-scenes.png and re-render the docs' blocks."""
    contact_sheet(DOCS / "miniworld-scenes.png")
    render_docs()
    print(f"wrote {DOCS / 'miniworld-scenes.png'} and re-rendered the docs")


if __name__ == "__main__":
    render()
