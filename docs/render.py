"""The one renderer of the docs: every generated block of every page, from the code and from
benchmarks/results/*.json; or a check that they are current.

    python docs/render.py           # rewrite every block of every page
    python docs/render.py --check   # exit 1 naming each stale block (tests/test_docs.py runs the same check)

A page marks where a fact goes; everything between the markers is replaced whole:

    <!-- generated:pipeline-inputs -->
    ...
    <!-- /generated:pipeline-inputs -->

A block may take an argument: ``<!-- generated:flags rfad-export triton-repo -->`` renders that
command's options as its ``--help`` lists them. The blocks about the code are this file's
(:data:`BLOCKS`); the blocks of measured results belong to the benchmark that measures them
(:data:`RESULT_BLOCKS`: each module's ``block(argument)``). The prose around the blocks is written
by hand and states no number that comes from the code or a measurement. Plots are images, drawn
by the benchmarks that write the results (``python -m benchmarks.suite.report`` draws the suite's).

Pages: every Markdown file of the checkout (:func:`pages`), the README included.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks package, whose results some blocks render, is imported from the checkout
    sys.path.insert(0, str(ROOT))
from docs.render_cells import fmt_mib, fmt_number, fmt_pixels, fmt_range, fmt_shape, md_cell, md_table  # noqa: E402

BLOCK = re.compile(r"<!-- generated:(?P<key>[^>]*?) -->\n(?P<body>.*?)<!-- /generated:(?P<end>[\w-]+) -->", re.S)


# Folders of the checkout that hold no pages of ours (environments, caches, outputs).
NOT_PAGES = {".venv", ".git", ".pytest_cache", "build", "out", "tour", "zoo", ".cache", "node_modules"}


def pages() -> list[Path]:
    """Every Markdown page of the checkout: the README first, then docs/, benchmarks/, tests/data/ ..."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in NOT_PAGES and not name.startswith(".")]
        found += [Path(folder) / name for name in files if name.endswith(".md")]
    readme = ROOT / "README.md"
    return [readme, *sorted(path for path in found if path != readme)]


# --- the commands ---------------------------------------------------------------------------

def programs() -> dict[str, str]:
    """Console script -> ``module:click object`` (pyproject.toml's [project.scripts])."""
    from rfad.app.console_scripts import SCRIPTS

    return {"rfad": "rfad.app.cli:main", **{name: target for name, (_, target) in SCRIPTS.items()}}


def load_program(name: str) -> click.Command:
    module, attribute = programs()[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def command(path: str) -> click.Command:
    """The click command of ``path``, e.g. ``"rfad-export triton-repo"``."""
    program, *subcommands = path.split()
    found = load_program(program)
    for name in subcommands:
        if not isinstance(found, click.Group) or name not in found.commands:
            raise KeyError(f"{path}: no command {name!r}")
        found = found.commands[name]
    return found


def help_records(path: str) -> list[tuple[str, str]]:
    """(flags, help) of every option ``--help`` lists for ``path``, in its order, without --help itself."""
    cmd = command(path)
    context = click.Context(cmd, info_name=path)
    records = [param.get_help_record(context) for param in cmd.get_params(context)
               if isinstance(param, click.Option) and "--help" not in param.opts]
    return [record for record in records if record is not None]


# --- formatting -----------------------------------------------------------------------------

# --- the blocks -----------------------------------------------------------------------------

def flags(path: str) -> str:
    rows = [(f"`{md_cell(flag)}`", md_cell(text)) for flag, text in help_records(path)]
    return md_table(("option", f"what it does (`{path} --help`)"), rows)


def _image_limits() -> str:
    from rfad.canvas import CanvasSpec
    from rfad.contract import MAX_IMAGE_BYTES

    return (f"≤ {fmt_mib(MAX_IMAGE_BYTES)} encoded, ≤ {fmt_pixels(CanvasSpec.max_pixels)}, "
            f"sides ≥ {CanvasSpec.min_side} px")


def _input_limits(name: str) -> str:
    from rfad.contract import DEFAULT_LIMITS as LIMITS, JUDGE_MAX_IMAGES

    special = {
        "product_image": _image_limits(),
        "generated_image": f"1–{JUDGE_MAX_IMAGES} images of one size, each {_image_limits()}",
        "prompt": f"1–{LIMITS.prompt_chars} characters",
        "negative_prompt": f"≤ {LIMITS.prompt_chars} characters",
        "caption": f"≤ {LIMITS.prompt_chars} characters",
        "seed": f"{fmt_range(LIMITS.seed)}, with room for the request's candidate seeds (below)",
        "max_attempts": f"{fmt_range(LIMITS.max_attempts)}, and at most the server's cap",
        "screen_at": "0–1, both excluded; the screening step (below) within 1 … `steps` − 1",
        "screen_threshold": f"{fmt_range(LIMITS.screen_threshold)}; required with `screen_at`, refused without it",
    }
    if name in special:
        return special[name]
    return fmt_range(getattr(LIMITS, name))


def _inputs_table(inputs) -> str:
    rows = [(f"`{f.name}`", f.datatype, fmt_shape(f.shape), "no" if f.optional else "yes", md_cell(_input_limits(f.name)),
             md_cell(f.doc)) for f in inputs]
    return md_table(("input", "type", "shape", "required", "limits", "what it is"), rows)


def _outputs_table(outputs) -> str:
    rows = [(f"`{f.name}`", f.datatype, fmt_shape(f.shape), md_cell(f.doc)) for f in outputs]
    return md_table(("output", "type", "shape", "what it is"), rows)


def pipeline_inputs() -> str:
    from rfad.contract import DEFAULT_LIMITS, PIPELINE_INPUTS

    highest = fmt_number(DEFAULT_LIMITS.seed[1])
    return (_inputs_table(PIPELINE_INPUTS) + "\n\n"
            f"Seeds: candidate *i* (counting across attempts, in draw order) uses `seed` + *i*, so `seed` + N − 1 must "
            f"stay ≤ {highest} with N = `candidates` × (1 + R) × max(`max_attempts`, ⌈`num_images` / `candidates`⌉) "
            "(absent fields at their defaults; R = 0 without early screening); a larger seed is INVALID_ARGUMENT "
            "naming the largest seed the request allows. `rfad generate` and the client apply the same rule "
            "(`rfad.contract.check_seed_room`).\n\n"
            "Early screening: the screening step is s = ⌊`screen_at` × `steps` + ½⌋ (`screen_at` at float32 "
            "precision, as it travels), and each candidate slot of an attempt is refilled at most R = ⌊`steps` / s⌋ "
            "times (`rfad.contract.screening_step`, `screening_replacements`).")


def pipeline_outputs() -> str:
    from rfad.contract import PIPELINE_OUTPUTS

    return _outputs_table(PIPELINE_OUTPUTS)


def judge_inputs() -> str:
    from rfad.contract import JUDGE_INPUTS

    return _inputs_table(JUDGE_INPUTS)


def judge_outputs() -> str:
    from rfad.contract import JUDGE_OUTPUTS

    return _outputs_table(JUDGE_OUTPUTS)


def classes() -> str:
    from rfad.contract import CLASS_NAMES

    return md_table(("column", "class"), [(i, name) for i, name in enumerate(CLASS_NAMES)])


def settings_limits() -> str:
    from rfad.contract import DEFAULT_LIMITS, DEFAULTS, SETTINGS_INPUTS

    special = {"screen_at": ("off", "0–1, both excluded"), "screen_threshold": ("none", "0–1, with screen_at")}
    rows = [(f"`{name}`", *special[name]) if name in special else
            (f"`{name}`", fmt_number(getattr(DEFAULTS, name)), fmt_range(getattr(DEFAULT_LIMITS, name)))
            for name in SETTINGS_INPUTS]
    return md_table(("setting", "default", "allowed"), rows)


def request_limits() -> str:
    from rfad.canvas import DECODED_FORMATS, CanvasSpec
    from rfad.contract import DEFAULT_LIMITS as LIMITS, JUDGE_MAX_IMAGES, MAX_IMAGE_BYTES
    from rfad.serving.pipeline_parameters import PipelineParameters

    return "\n".join([
        f"- Images: ≤ {fmt_mib(MAX_IMAGE_BYTES)} encoded (larger requests are refused unread) and ≤ "
        f"{fmt_pixels(CanvasSpec.max_pixels)} (from the header, before decoding), each side ≥ {CanvasSpec.min_side} px; "
        f"only the {', '.join(DECODED_FORMATS)} decoders are reachable.",
        f"- Texts: ≤ {LIMITS.prompt_chars} characters of valid UTF-8; the prompt must not be empty.",
        f"- Work per request: ≤ {LIMITS.candidates[1]} candidates per attempt, ≤ {LIMITS.num_images[1]} images, "
        f"`max_attempts` ≤ the server's cap (`rfad-export triton-repo --max-attempts-cap`, default "
        f"{PipelineParameters.max_attempts_cap}), "
        f"≤ {LIMITS.steps[1]} steps; ≤ {JUDGE_MAX_IMAGES} images per `rfad_judge` request.",
    ])


def pipeline_parameters() -> str:
    from rfad.serving.pipeline_parameters import DEFAULT_JUDGE, INT32_MAX, JUDGE_MODES, PipelineParameters
    from rfad.contract import DEFAULTS
    from rfad.canvas import CANVAS_MULTIPLE, MIN_CANVAS_SIDE

    from rfad.contract import DEFAULT_LIMITS

    accepted = {"max_attempts_cap": f"{DEFAULTS.max_attempts} (the default `max_attempts`) – {INT32_MAX} (INT32)",
                "canvas_size": f"a multiple of {CANVAS_MULTIPLE}, ≥ {MIN_CANVAS_SIDE}",
                "judge": " \\| ".join(f"`{mode}`" for mode in JUDGE_MODES),
                "default_steps": fmt_range(DEFAULT_LIMITS.steps),
                "candidates_cap": f"{DEFAULTS.candidates} (the default `candidates`) – {DEFAULT_LIMITS.candidates[1]}"}
    # default_steps and candidates_cap come from the deployment profile (--profile), not a flag of their own.
    option = {"judge": "--pipeline-judge", "default_steps": "--profile", "candidates_cap": "--profile"}
    default = {"judge": f"`{DEFAULT_JUDGE}` where the judge components were exported, else `none`"}
    rows = [(f"`{f.name}`", default.get(f.name, getattr(PipelineParameters, f.name)), accepted[f.name],
             f"`{option.get(f.name, '--' + f.name.replace('_', '-'))}`") for f in fields(PipelineParameters)]
    return md_table(("parameter", "default", "accepted", "`rfad-export triton-repo` option"), rows)


def canvas() -> str:
    from rfad.canvas import CANVAS_MULTIPLE, MIN_CANVAS_SIDE, CanvasSpec

    spec = CanvasSpec()
    return "\n".join([
        f"- canvas {spec.width}×{spec.height} px by default (a side is a multiple of {CANVAS_MULTIPLE}, ≥ "
        f"{MIN_CANVAS_SIDE});",
        f"- the product, cropped to its alpha bounding box, fits {spec.product_scale:g} of each side, centred; "
        + ("enlarged when smaller;" if spec.upscale else "shrunk when larger, never enlarged by default;"),
        f"- generate-mask: 255 − alpha, dilated with a {spec.mask_dilation}×{spec.mask_dilation} kernel;",
        f"- control image: Canny ({spec.canny_low}/{spec.canny_high}) of the product on black;",
        f"- init image: the product over RGB {spec.background};",
        f"- a product image must be ≥ {spec.min_side} px per side (its alpha bounding box too) and ≤ "
        f"{fmt_pixels(spec.max_pixels)}.",
    ])


def components() -> str:
    from rfad.components.registry import COMPONENTS

    rows = [(f"`{c.name}`", c.group, md_cell(c.description), "batch, height, width" if c.spatial else "batch")
            for c in COMPONENTS.values()]
    return md_table(("component", "group", "what it computes", "dynamic axes"), rows)


def memory_options() -> str:
    from rfad.onnx_session import MEMORY_OPTIONS

    def on(flag: bool) -> str:
        return "on" if flag else "off"

    rows = [(f"`{name}`", on(o.arena), on(o.memory_pattern), "by what is asked" if o.exact_arena else "powers of two")
            for name, o in MEMORY_OPTIONS.items()]
    return md_table(("component", "CPU arena", "memory pattern", "arena grows"), rows)


def export_numbers() -> str:
    from rfad.contract import DEFAULT_LIMITS, MAX_COMPONENT_BATCH
    from rfad.deploy.profiles import PROFILES
    from rfad.export.onnx_export import PROTOBUF_LIMIT
    from rfad.export.tolerances import CHECK_TOLERANCES, FP16_REFERENCE_MARGIN, PARITY_TOLERANCE

    engines = "; ".join(f"`{p.name}` batch {'/'.join(map(str, p.engines.batch))}, "
                        + (f"static {p.engines.image[0]}x{p.engines.image[0]} px" if p.engines.static_image
                           else f"square images {'/'.join(map(str, p.engines.image))} px")
                        for p in PROFILES.values() if p.engines is not None)
    return "\n".join([
        f"- Largest batch a component sees: {MAX_COMPONENT_BATCH} ({DEFAULT_LIMITS.candidates[1]} candidates, twice "
        "under classifier-free guidance; a deployment profile with a lower candidates cap sends less); component "
        "models take the profile's `max_batch_size`, and a `rfad-export triton-repo --max-batch` below what the "
        "pipeline sends is refused.",
        "- Parity at export: max abs difference per output ≤ tolerance × max(1, max |PyTorch output|), tolerance "
        + ", ".join(f"{value:g} for {precision}" for precision, value in PARITY_TOLERANCE.items())
        + f"; for fp16 at least {FP16_REFERENCE_MARGIN:g} × the distance of PyTorch's own float16 run from its "
        "float32 one, on the same inputs (below).",
        "- `rfad-export check` passes where |a − b| ≤ atol + rtol × |PyTorch| elementwise, by default "
        + "; ".join(f"{precision}: atol {t['atol']:g}, rtol {t['rtol']:g}" for precision, t in CHECK_TOLERANCES.items())
        + ".",
        f"- TensorRT optimisation profiles (min/opt/max) come from the deployment profile: {engines} (for the "
        "components with dynamic image axes; the others take the batch range).",
        f"- Weights go to ONNX external data above {PROTOBUF_LIMIT / 2**30:g} GiB (protobuf's limit).",
    ])


def rfnet_config() -> str:
    from transformers import ResNetConfig, RobertaConfig

    from rfad.models.rfnet import MODALITIES, FeatureFilter, RFNetConfig

    c = RFNetConfig()
    kernel = FeatureFilter(c.heads, c.heads, 2, 0.0).conv_out.kernel_size[0]  # a narrow one: only the kernel is read
    return "\n".join([
        f"- inputs: {', '.join(MODALITIES)} and the caption; images in [0, 1] at any size, resized to "
        f"{c.image_size} px and normalised inside;",
        f"- image encoder: ResNet-50 (transformers `ResNetModel`, {ResNetConfig().hidden_sizes[-1]} channels on a "
        f"{c.grid}×{c.grid} map at {c.image_size} px) → a pointwise conv to width {c.width}, plus a learned modality "
        "embedding; " + ("one backbone shared by the four images" if c.shared_backbone else "one backbone per image")
        + " (`shared_backbone` in the config);",
        f"- caption encoder: RoBERTa (hidden size {RobertaConfig().hidden_size}, up to {c.max_caption_tokens} tokens) → "
        f"linear to width {c.width};",
        f"- Feature Filter Module: {c.filter_layers} layer(s), {c.heads}-head cross-attention, {kernel}×{kernel} "
        f"convolutions on the {c.grid}×{c.grid} token grid;",
        f"- fusion: a cls token and the image tokens through {c.fusion_layers} transformer layers, width {c.width}, "
        f"{c.heads} heads, dropout {c.dropout:g};",
        f"- head: linear on the cls token → {c.num_classes} classes, cross-entropy.",
    ])


def rf1m_labels() -> str:
    from rfad.trainer.data.rf1m import RF1M_LABELS

    return md_table(("index", "label in RF1M's release"), list(enumerate(RF1M_LABELS)))


def model_set_roles() -> str:
    from rfad.models.model_set import ROLES, ModelSet
    from rfad.models.options import MODEL_SET_TYPES

    rows = [(f"`{role}`", md_cell(text), f"`--{role.replace('_', '-')}`" if role in MODEL_SET_TYPES else "")
            for role, text in ROLES.items()]
    rows.append(("`lora_scale`", f"LoRA scale (default {ModelSet.lora_scale:g})", "`--lora-scale`"))
    return md_table(("key", "model", "flag (as in `rfad generate`)"), rows)


def layers() -> str:
    """The import contracts of pyproject.toml ([tool.importlinter]), which tests/test_layers.py checks."""
    import tomllib

    rows = []
    for contract in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "layers":
            layers = [[f"`{name.strip()}`" for name in layer.replace(":", "|").split("|")] for layer in contract["layers"]]
            modules = f"in `{contract['containers'][0]}`, highest first: " + "; ".join(", ".join(names) for names in layers)
        else:
            modules = ", ".join(f"`{name}`" for name in contract.get("protected_modules") or contract["forbidden_modules"])
        rows.append((f"`{contract['id']}`", md_cell(contract["name"]), md_cell(modules)))
    return md_table(("contract", "rule", "modules"), rows)


def profiles() -> str:
    from rfad.deploy.table import profiles_table

    return profiles_table()


BLOCKS: dict[str, Callable[..., str]] = {
    "flags": flags, "pipeline-inputs": pipeline_inputs, "pipeline-outputs": pipeline_outputs,
    "judge-inputs": judge_inputs, "judge-outputs": judge_outputs, "classes": classes,
    "settings-limits": settings_limits, "request-limits": request_limits, "pipeline-parameters": pipeline_parameters,
    "canvas": canvas, "components": components, "memory-options": memory_options, "export-numbers": export_numbers,
    "rfnet-config": rfnet_config, "rf1m-labels": rf1m_labels, "model-set-roles": model_set_roles,
    "profiles": profiles, "layers": layers,
}
# Blocks of measured results: kind -> the benchmark module whose ``block(argument)`` renders them.
RESULT_BLOCKS: dict[str, str] = {
    "performance": "benchmarks.suite.report",
    "sd15": "benchmarks.studies.sd15.sd15_report",
    "method": "benchmarks.studies.method.method_report",
    "miniworld": "benchmarks.studies.miniworld.report",
    "screening": "benchmarks.studies.screening.summary",
}


def render_block(key: str) -> str:
    kind, _, argument = key.partition(" ")
    if kind in RESULT_BLOCKS:
        return importlib.import_module(RESULT_BLOCKS[kind]).block(argument)
    if kind not in BLOCKS:
        raise ValueError(f"<!-- generated:{key} -->: unknown block {kind!r} (known: {', '.join([*BLOCKS, *RESULT_BLOCKS])})")
    return BLOCKS[kind](argument) if argument else BLOCKS[kind]()


def render(text: str, where: str = "page") -> str:
    """``text`` with every generated block rendered from the code."""
    def replace(match: re.Match) -> str:
        key, end = match["key"].strip(), match["end"]
        if key.partition(" ")[0] != end:
            raise ValueError(f"{where}: <!-- generated:{key} --> is closed by <!-- /generated:{end} -->")
        return f"<!-- generated:{key} -->\n{render_block(key)}\n<!-- /generated:{end} -->"

    rendered = BLOCK.sub(replace, text)
    opened, closed = text.count("<!-- generated:"), text.count("<!-- /generated:")
    if opened != closed or opened != len(BLOCK.findall(text)):
        raise ValueError(f"{where}: {opened} block(s) opened, {closed} closed: a marker is malformed")
    return rendered


def stale_pages() -> list[str]:
    """Pages whose committed text differs from the rendered one, with the blocks that differ."""
    stale = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        rendered = render(text, page.name)
        if rendered != text:
            old = {m["key"]: m["body"] for m in BLOCK.finditer(text)}
            new = {m["key"]: m["body"] for m in BLOCK.finditer(rendered)}
            keys = [key for key in new if old.get(key) != new[key]]
            stale.append(f"{page.relative_to(ROOT)}: {', '.join(keys)}")
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    args = parser.parse_args()
    if args.check:
        stale = stale_pages()
        for line in stale:
            print(f"stale: {line} (run python docs/render.py)")
        sys.exit(1 if stale else 0)
    for page in pages():
        text = page.read_text(encoding="utf-8")
        rendered = render(text, page.name)
        if rendered != text:
            page.write_text(rendered, encoding="utf-8")
            print(f"rewrote {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
