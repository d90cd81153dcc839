"""One home for each default and one declaration of the model-set flags (issue 13, items 3 and 5).

Click introspection of every command that takes a model set, the contract's docs, and the
rfad_pipeline parameters' parsing and checks (the served load-time errors are in test_serving).
"""

from __future__ import annotations

import inspect

import click
import pytest

from rfad.canvas import CanvasSpec
from rfad.app.cli import main as rfad_cli
from rfad.contract import DEFAULT_LIMITS, PIPELINE_INPUTS, SETTINGS_INPUTS
from rfad.export.cli import main as export_cli
from rfad.models.options import MODEL_SET_FLAGS, MODEL_SET_TYPES
from rfad.pipeline.settings import GenerationSettings
from rfad.serving.pipeline_parameters import (
    DEFAULT_JUDGE,
    JUDGE_COMPONENTS,
    PipelineParameterError,
    PipelineParameters,
)
from rfad.trainer.cli import main as train_cli

SETTINGS, CANVAS = GenerationSettings(), CanvasSpec()


def _command(group: click.Group, name: str) -> click.Command:
    return group.commands[name]


# command -> (the model-set flags it must have, flag -> the dataclass value its default must be)
COMMANDS = {
    "rfad generate": (_command(rfad_cli, "generate"), set(MODEL_SET_FLAGS), {
        "seed": SETTINGS.seed, "steps": SETTINGS.steps, "guidance": SETTINGS.guidance_scale,
        "controlnet_scale": SETTINGS.controlnet_scale, "num_images": SETTINGS.num_images,
        "candidates": SETTINGS.candidates, "max_attempts": SETTINGS.max_attempts, "threshold": SETTINGS.threshold}),
    "rfad demo": (_command(rfad_cli, "demo"), {"models"}, {"threshold": SETTINGS.threshold}),
    "rfad-export onnx": (_command(export_cli, "onnx"), set(MODEL_SET_FLAGS), {}),
    "rfad-export check": (_command(export_cli, "check"), set(MODEL_SET_FLAGS), {}),
    # triton-repo's flags default to its --profile's values (the cpu profile's are these defaults:
    # tests/test_profiles.py); its help says so.
    "rfad-export triton-repo": (_command(export_cli, "triton-repo"), set(), {"profile": "cpu"}),
    "rfad-train rfft": (_command(train_cli, "rfft"), set(MODEL_SET_FLAGS), {
        "ddim_steps": SETTINGS.steps, "guidance": SETTINGS.guidance_scale,
        "controlnet_scale": SETTINGS.controlnet_scale, "size": CANVAS.width, "product_scale": CANVAS.product_scale,
        "seed": SETTINGS.seed}),
    "rfad-train eval-rfft": (_command(train_cli, "eval-rfft"), set(MODEL_SET_FLAGS) | {"base_controlnet"}, {
        "steps": SETTINGS.steps, "size": CANVAS.width, "guidance": SETTINGS.guidance_scale,
        "max_attempts": SETTINGS.max_attempts, "threshold": SETTINGS.threshold, "seed": SETTINGS.seed}),
    "rfad-train eval-rfnet": (_command(train_cli, "eval-rfnet"), set(), {"threshold": SETTINGS.threshold}),
}


@pytest.mark.parametrize("title", COMMANDS)
def test_model_set_flags_have_one_declaration_and_type(title):
    command, expected, _ = COMMANDS[title]
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    assert expected <= set(options), f"{title} lacks {sorted(expected - set(options))}"
    for name in expected:
        role = "controlnet" if name == "base_controlnet" else name
        # The very object of the shared declaration: no command declares its own variant.
        assert options[name].type is MODEL_SET_TYPES[role], (title, name)
        assert options[name].default is None and options[name].help
    # eval-rfft's --controlnet is the tuned one; the model set's is --base-controlnet.
    assert options.get("models") is None or options["models"].opts == ["--models"]


def test_model_set_flags_check_the_path_and_pass_strings(tmp_path):
    # Strings: the trainers' dataclass configs hold them and write them to JSON.
    (tmp_path / "lora.safetensors").write_bytes(b"")
    assert MODEL_SET_TYPES["controlnet"].convert(str(tmp_path), None, None) == str(tmp_path)
    assert MODEL_SET_TYPES["lora"].convert(str(tmp_path / "lora.safetensors"), None, None) == str(tmp_path / "lora.safetensors")
    with pytest.raises(click.BadParameter, match="does not exist"):
        MODEL_SET_TYPES["controlnet"].convert(str(tmp_path / "nowhere"), None, None)
    with pytest.raises(click.BadParameter, match="is a directory"):
        MODEL_SET_TYPES["lora"].convert(str(tmp_path), None, None)
    with pytest.raises(click.BadParameter, match="is a file"):
        MODEL_SET_TYPES["rfnet"].convert(str(tmp_path / "lora.safetensors"), None, None)


@pytest.mark.parametrize("title", COMMANDS)
def test_help_shows_the_dataclass_defaults(title):
    command, _, defaults = COMMANDS[title]
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    ctx = click.Context(command, info_name=title)
    for name, value in defaults.items():
        assert options[name].default == value, (title, name)
        assert f"default: {value}" in options[name].get_help_record(ctx)[1], (title, name)


def test_generate_takes_the_canvas_the_set_declares_else_the_canvas_defaults():
    """--size and --product-scale default to the model set's declared canvas (tests/test_declared_canvas.py),
    and to CanvasSpec's where it declares none: the help names both."""
    command = _command(rfad_cli, "generate")
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    ctx = click.Context(command, info_name="rfad generate")
    for name, value in (("size", CANVAS.width), ("product_scale", CANVAS.product_scale)):
        assert options[name].default is None
        assert f"[default: the model set's canvas, else {value}]" in options[name].get_help_record(ctx)[1]


def test_library_signatures_and_the_contract_read_the_same_defaults():
    from rfad.trainer.rfft.evaluate import evaluate_rfft

    signature = inspect.signature(evaluate_rfft).parameters
    assert (signature["steps"].default, signature["guidance"].default, signature["max_attempts"].default,
            signature["threshold"].default, signature["size"].default) == (
        SETTINGS.steps, SETTINGS.guidance_scale, SETTINGS.max_attempts, SETTINGS.threshold, CANVAS.width)
    docs = {field.name: field.doc for field in PIPELINE_INPUTS}
    for name in SETTINGS_INPUTS:  # what rfad-client --help shows for each optional input
        assert f"(default {getattr(SETTINGS, name)}" in docs[name], name
    assert CANVAS.height == CANVAS.width == PipelineParameters().canvas_size
    assert PipelineParameters().limits() == DEFAULT_LIMITS
    judge_help = _command(export_cli, "triton-repo").params
    assert any(p.name == "pipeline_judge" and f"default: {DEFAULT_JUDGE}" in p.help for p in judge_help)


@pytest.mark.parametrize("values, parameter, words", [
    ({"judje": "ensemble"}, "judje", "unknown parameter"),
    ({"max_attempts_cap": "twenty"}, "max_attempts_cap", "expected an integer, got 'twenty'"),
    ({"max_attempts_cap": "4"}, "max_attempts_cap", "outside [5, 2147483647]"),
    ({"canvas_size": "100"}, "canvas_size", "multiple of 8"),
    ({"canvas_size": "32"}, "canvas_size", "at least 64"),
    ({"canvas_size": "5.12e2"}, "canvas_size", "expected an integer"),
    ({"judge": "ensamble"}, "judge", "not one of ensemble, components, none"),
    ({"judge": ""}, "judge", "not one of"),
])
def test_pipeline_parameters_refuse_what_the_model_cannot_use(values, parameter, words):
    with pytest.raises(PipelineParameterError) as info:
        PipelineParameters.from_config(values)
    assert info.value.parameter == parameter and str(info.value).startswith(f"{parameter}: ")
    assert words in str(info.value)


def test_pipeline_parameters_round_trip_and_defaults():
    assert PipelineParameters.from_config({}) == PipelineParameters()
    chosen = PipelineParameters(max_attempts_cap=7, canvas_size=128, judge="none")
    assert PipelineParameters.from_config({**chosen.to_config(), "EXECUTION_ENV_PATH": "/env.tar.gz"}) == chosen
    assert chosen.limits().max_attempts == (1, 7) and chosen.limits().steps == DEFAULT_LIMITS.steps


def test_judge_mode_must_be_usable_in_the_repository(tmp_path):
    repository, assets = tmp_path / "repo", tmp_path / "repo" / "rfad_pipeline" / "1" / "assets"
    assets.mkdir(parents=True)
    PipelineParameters(judge="none").check_judge(repository, assets)
    with pytest.raises(PipelineParameterError, match="judge: 'ensemble' needs the rfad_judge model"):
        PipelineParameters(judge="ensemble").check_judge(repository, assets)
    for name in JUDGE_COMPONENTS + ("rfad_judge",):
        (repository / name).mkdir()
        (repository / name / "config.pbtxt").write_text(f'name: "{name}"\n')
    PipelineParameters(judge="ensemble").check_judge(repository, assets)
    # Every judge model is there but the caption tokenizer is not: refused, not "no judge".
    with pytest.raises(PipelineParameterError, match=r"judge: 'components' needs caption_tokenizer"):
        PipelineParameters(judge="components").check_judge(repository, assets)
    (assets / "caption_tokenizer").mkdir()
    PipelineParameters(judge="components").check_judge(repository, assets)
    (repository / "rfnet" / "config.pbtxt").unlink()
    with pytest.raises(PipelineParameterError, match="needs rfnet, missing from"):
        PipelineParameters(judge="components").check_judge(repository, assets)
