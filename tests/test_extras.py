"""The optional extras: pyproject.toml and rfad.extras agree, and a command whose extra is missing
says which one to install in one line (exit code 1, no traceback)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rfad.extras import EXTRA_INCLUDES, EXTRA_MODULES, extra_modules

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(extra: str) -> tuple[set[str], set[str]]:
    """(distributions, included rfad extras) that pyproject.toml lists for ``extra``."""
    dists, included = set(), set()
    for line in PROJECT["optional-dependencies"][extra]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == "rfad":
            included |= requirement.extras
        else:
            dists.add(canonicalize_name(requirement.name))
    return dists, included


def _all_requirements(extra: str) -> set[str]:
    dists, included = _requirements(extra)
    return dists.union(*(_all_requirements(inner) for inner in included))


def test_the_base_install_is_the_client_extra():
    assert sorted(PROJECT["dependencies"]) == sorted(PROJECT["optional-dependencies"]["client"])
    base = {canonicalize_name(Requirement(line).name) for line in PROJECT["dependencies"]}
    assert base.isdisjoint({"torch", "diffusers", "transformers", "peft", "opencv-python-headless"})


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_each_extra_names_the_modules_pyproject_installs(extra):
    assert set(EXTRA_INCLUDES.get(extra, ())) == _requirements(extra)[1]
    dists = _all_requirements(extra)
    # The distributions those requirements pull in too (grpcio comes with tritonclient[grpc]).
    pulled = {canonicalize_name(Requirement(line).name)
              for dist in dists for line in importlib.metadata.requires(dist) or ()}
    providers = importlib.metadata.packages_distributions()
    by_dist: dict[str, set[str]] = {}
    for module in extra_modules(extra):
        assert module in providers, f"{module}: no installed distribution provides it"
        for dist in providers[module]:
            by_dist.setdefault(canonicalize_name(dist), set()).add(module)
    assert set(by_dist) <= dists | pulled, f"{extra}: modules of distributions it does not install"
    assert dists <= set(by_dist), f"{extra}: no module probed for {sorted(dists - set(by_dist))}"


# --- Missing extras --------------------------------------------------------------------------------

_CALL = """\
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # any import of it raises ImportError, as when it is not installed
sys.argv = {argv!r}
module, function = {target!r}.split(":")
getattr(__import__(module, fromlist=[function]), function)()
"""


def _run_entry(target: str, argv: list[str], blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = _CALL.format(blocked=blocked, argv=argv, target=target)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _expected(command: str, *extras: str) -> str:
    names = " and ".join(f"'{e}'" for e in extras)
    plural = "s" if len(extras) > 1 else ""
    return f'Error: {command} needs the {names} extra{plural}: pip install "rfad[{",".join(extras)}]"\n'


@pytest.mark.parametrize("script, blocked, extra", [
    ("rfad-data", ("torch",), "train"),
    ("rfad-train", ("accelerate",), "train"),
    ("rfad-export", ("onnx",), "export"),
    ("rfad-serve", ("pytriton",), "serve"),
    ("rfad-serve", ("torch", "diffusers"), "serve"),
    ("rfad-client", ("tritonclient",), "client"),
])
def test_console_scripts_name_their_missing_extra_in_one_line(script, blocked, extra):
    target = PROJECT["scripts"][script]
    result = _run_entry(target, [script, "--help"], blocked)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr == _expected(script, extra)


def test_every_console_script_checks_an_extra():
    stage_scripts = {name: target for name, target in PROJECT["scripts"].items() if name != "rfad"}
    assert all(target.startswith("rfad.app.console_scripts:") for target in stage_scripts.values())
    from rfad.app.console_scripts import SCRIPTS

    assert set(SCRIPTS) == set(stage_scripts)
    # With the extras installed, the command itself runs.
    result = _run_entry(PROJECT["scripts"]["rfad-client"], ["rfad-client", "--help"], ())
    assert result.returncode == 0 and "Usage: rfad-client" in result.stdout, result.stderr


@pytest.mark.parametrize("arguments, blocked, extras", [
    (["tiny", "--out", "{tmp}/zoo"], ("torch",), ("generate",)),
    (["generate", "--models", "{tmp}", "--product", "{tmp}/p.png", "--prompt", "ad", "--out", "{tmp}/o.png"],
     ("cv2",), ("generate",)),
    (["demo", "--out", "{tmp}/demo"], ("pytriton",), ("serve",)),
    (["demo", "--out", "{tmp}/demo"], ("torch",), ("export", "serve")),
])
def test_rfad_commands_name_their_missing_extra_in_one_line(tmp_path, arguments, blocked, extras):
    (tmp_path / "p.png").write_bytes(b"")
    argv = ["rfad", *(a.format(tmp=tmp_path) for a in arguments)]
    result = _run_entry(PROJECT["scripts"]["rfad"], argv, blocked)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr == _expected(f"rfad {arguments[0]}", *extras)
    assert not any(tmp_path.glob("*/")), "the command ran before it was refused"


def test_rfad_generate_with_the_onnx_runner_needs_the_export_extra(tmp_path):
    (tmp_path / "p.png").write_bytes(b"")
    argv = ["rfad", "generate", "--models", str(tmp_path), "--product", str(tmp_path / "p.png"), "--prompt", "ad",
            "--out", str(tmp_path / "o.png"), "--runner", "onnx", "--onnx", str(tmp_path)]
    result = _run_entry(PROJECT["scripts"]["rfad"], argv, ("onnxruntime",))
    assert result.returncode == 1 and result.stderr == _expected("rfad generate --runner onnx", "export")
