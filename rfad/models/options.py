"""The model-set flags of every command, declared once: names, click types and help.

``rfad generate``, ``rfad demo``, ``rfad-export onnx``/``check``, ``rfad-train rfft``/
``eval-rfft``/``rfnet``/``eval-rfnet`` and ``rfad-data prepare`` take a model set (``--models``)
and flags that override its roles (``--controlnet``, ``--lora`` ...). They declare them through
:func:`model_set_options` (or :func:`model_option` for one flag), so a flag has the same type
everywhere: an existing path, passed on as ``str`` (what the trainers' dataclass configs hold
and write to JSON), ``--lora-scale`` a float. Help texts come from :data:`ModelSet`'s roles and
defaults. Importing this module is cheap (click and the standard library).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from rfad.models.model_set import MODEL_SET_FILE, ROLES, ModelSet

_FOLDER = click.Path(exists=True, file_okay=False)
_FILE = click.Path(exists=True, dir_okay=False)
_FOLDER_OR_FILE = click.Path(exists=True)

# The one type of each flag, by its parameter name (the ModelSet role it overrides).
MODEL_SET_TYPES: dict[str, click.ParamType] = {
    "models": _FOLDER_OR_FILE,
    "sd_config": _FOLDER,
    "controlnet": _FOLDER,
    "lora": _FILE,
    "lora_scale": click.FLOAT,
    "rfnet": _FOLDER,
    "depth": _FOLDER,
    "saliency": _FOLDER_OR_FILE,
    "screen_rfnet": _FOLDER,
}
# The flags a command gets by default; --screen-rfnet only where early screening runs (rfad
# generate, rfad-export onnx).
MODEL_SET_FLAGS = tuple(name for name in MODEL_SET_TYPES if name != "screen_rfnet")


def default_help(name: str) -> str:
    """The help of flag ``name`` where a command says nothing more specific."""
    if name == "models":
        return (f"Model set folder ({MODEL_SET_FILE}), diffusers SD-1.5 folder, or single-file SD-1.5 "
                ".safetensors.")
    if name == "lora_scale":
        return f"LoRA scale [default: the model set's, else {ModelSet.lora_scale}, the official one]."
    return f"{ROLES[name][0].upper()}{ROLES[name][1:]} [default: the model set's]."


def model_option(name: str, *declarations: str, required: bool = False, help: str | None = None) -> Callable:
    """One model-set flag with its shared type; ``declarations`` rename it (e.g.
    ``model_option("controlnet", "--base-controlnet", "base_controlnet")``)."""
    declarations = declarations or ("--" + name.replace("_", "-"),)
    return click.option(*declarations, type=MODEL_SET_TYPES[name], required=required, default=None,
                        help=help or default_help(name))


def model_set_options(names: Sequence[str] = MODEL_SET_FLAGS, required: Sequence[str] = (),
                      help: dict[str, str] | None = None) -> Callable:
    """Decorator: the flags ``names`` (in that order in ``--help``), ``required`` ones required,
    ``help`` replacing the default help of some."""
    unknown = sorted(set(names) - set(MODEL_SET_TYPES))
    if unknown:
        raise ValueError(f"unknown model-set flags {unknown}; known: {', '.join(MODEL_SET_TYPES)}")

    def decorate(command):
        for name in reversed(names):
            command = model_option(name, required=name in required, help=(help or {}).get(name))(command)
        return command

    return decorate
