"""The layers hold by rule: import-linter checks pyproject.toml's contracts, and a planted import
across a layer fails the check (docs/design.md#layers).

import-linter reads the import graph of installed packages; in the checkout the stages live in
folders of their own (pyproject's package-dir: app/, trainer/, export/, client/), where it would
see rfad/ alone and pass without looking at them. So the check runs on the package laid out as
it is installed: a folder of links to the checkout's files, every stage under rfad/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def installed_layout(view: Path) -> Path:
    """``view`` laid out as site-packages holds rfad (and the checkout's benchmarks package): real
    folders, each Python file a link to the checkout's, so that a test can add a module."""
    folders = {package: ROOT / folder for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()}
    folders["benchmarks"] = ROOT / "benchmarks"
    for package, source in folders.items():
        for parent, subfolders, files in os.walk(source):
            subfolders[:] = [name for name in subfolders if name != "__pycache__" and
                             (Path(parent) / name / "__init__.py").is_file()]
            target = view.joinpath(*package.split("."), Path(parent).relative_to(source))
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                if name.endswith(".py"):
                    (target / name).symlink_to(Path(parent) / name)
    return view


def lint_imports(view: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with pyproject.toml's contracts over ``view``'s packages (no cache: always the files as they are)."""
    command = [str(Path(sys.executable).parent / "lint-imports"), str(ROOT / "pyproject.toml"), "--no-cache"]
    return subprocess.run(command, cwd=view, env={**os.environ, "PYTHONPATH": str(view)}, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return installed_layout(tmp_path_factory.mktemp("installed"))


def test_the_import_contracts_hold_over_every_module(layout):
    result = lint_imports(layout)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout
    # Every Python file of the package and the benchmarks was read, the stages' folders included
    # (the count adds the external packages they import).
    analyzed = int(re.search(r"Analyzed (\d+) files", result.stdout).group(1))
    assert analyzed >= sum(1 for _ in layout.rglob("*.py")), result.stdout


def test_an_import_across_a_layer_breaks_its_contract(tmp_path):
    view = installed_layout(tmp_path)
    planted = {
        "rfad/pipeline/planted_core.py": "from rfad.trainer.api import train_rfnet",  # the core imports a stage
        "rfad/export/planted_sibling.py": "import rfad.trainer.api",  # a stage imports its sibling
        "benchmarks/suite/planted_bench.py": "from rfad.export.onnx_steps import load_models",  # past a public API
        "rfad/client/planted_client.py": "import torch",  # the client loads the model stack
        "rfad/tiny/planted_app.py": "import rfad.app.demo",  # the core imports the app
    }
    for path, line in planted.items():
        (view / path).write_text(line + "\n")
    result = lint_imports(view)
    assert result.returncode == 1
    report = result.stdout.replace("\n", " ")
    for expected in ("rfad.pipeline.planted_core -> rfad.trainer.api", "rfad.export.planted_sibling -> rfad.trainer.api",
                     "benchmarks.suite.planted_bench -> rfad.export.onnx_steps",
                     "rfad.client.planted_client -> torch", "rfad.tiny.planted_app -> rfad.app.demo"):
        assert expected in report, result.stdout
    assert "Contracts: 2 kept, 3 broken." in result.stdout, result.stdout


def test_the_client_contract_forbids_every_core_module_but_the_request_contract():
    """A new core module is forbidden to the client until it is named here as part of the contract."""
    allowed = {"rfad", "rfad.contract", "rfad.pipeline", "rfad.pipeline.settings", "rfad.extras"}
    contract = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["id"] == "client")
    forbidden = set(contract["forbidden_modules"])
    core = {".".join(("rfad", *path.relative_to(ROOT / "rfad").with_suffix("").parts)).removesuffix(".__init__")
            for path in (ROOT / "rfad").rglob("*.py")}
    uncovered = sorted(module for module in core - allowed
                       if not any(module == name or module.startswith(name + ".") for name in forbidden))
    assert uncovered == []
