"""The optional extras of ``pip install rfad``, and the one line a command prints when its extra is missing.

The base install is the client alone (``rfad.client``, ``rfad-client``): tritonclient[grpc],
numpy, Pillow, click, tqdm. The model stack comes in extras (pyproject.toml). Every command
calls :func:`require_extras` before it imports anything heavy, so a missing extra is one line
naming what to install (exit code 1), not an ImportError traceback. Torch-free, like the client.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable

import click

# The top-level modules each extra installs (pyproject.toml's dependencies and
# optional-dependencies; tests/test_extras.py keeps the two in step). "client" is the base install.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "client": ("tritonclient", "grpc", "numpy", "PIL", "click", "tqdm"),
    "generate": ("torch", "diffusers", "transformers", "tokenizers", "safetensors", "peft", "cv2"),
    "train": ("accelerate", "tensorboard", "pyarrow"),
    "export": ("onnx", "onnxruntime", "onnxscript", "polygraphy", "onnx_graphsurgeon", "onnxconverter_common", "yaml"),
    "serve": ("onnxruntime", "pytriton"),
}

# Extras that include others (pyproject.toml: train = ["rfad[generate]", ...]): the Triton python
# models, the trainers and the exporters all run the core loop or load the torch models.
EXTRA_INCLUDES: dict[str, tuple[str, ...]] = {"train": ("generate",), "export": ("generate",), "serve": ("generate",)}


def extra_modules(extra: str) -> tuple[str, ...]:
    """Every module ``extra`` installs, those of the extras it includes first."""
    included = tuple(module for inner in EXTRA_INCLUDES.get(extra, ()) for module in extra_modules(inner))
    return included + EXTRA_MODULES[extra]


def missing_extras(extras: Iterable[str]) -> list[str]:
    """The extras among ``extras`` with a module that cannot be imported here (found, not imported)."""
    return [extra for extra in extras if any(_absent(module) for module in extra_modules(extra))]


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a module blocked with None in sys.modules, or without a spec
        return True


def missing_extras_message(command: str, extras: list[str]) -> str:
    """``<command> needs the 'x' extra: pip install "rfad[x]"`` (several extras: "the 'x' and 'y' extras")."""
    names = " and ".join(f"'{extra}'" for extra in extras)
    return f'{command} needs the {names} extra{"s" if len(extras) > 1 else ""}: pip install "rfad[{",".join(extras)}]"'


class MissingExtras(click.ClickException):
    """A command's extra is not installed: click prints ``Error: <message>`` and exits 1."""


def require_extras(command: str, *extras: str) -> None:
    """Raise :class:`MissingExtras` naming what to install when a module of ``extras`` is missing."""
    missing = missing_extras(extras)
    if missing:
        raise MissingExtras(missing_extras_message(command, missing))


def needs_extras(*extras: str):
    """Decorator of a click command: :func:`require_extras` under the command's name (``rfad generate``)
    before it runs. Put it above decorators that import anything heavy."""
    def decorate(command):
        @functools.wraps(command)
        def checked(*args, **kwargs):
            require_extras(click.get_current_context().command_path, *extras)
            return command(*args, **kwargs)

        return checked

    return decorate
