"""The NVIDIA container releases a GPU profile's fleet runs on, declared once.

``deploy/Dockerfile`` builds two images from one release: ``serve`` on NVIDIA's
``tritonserver`` image (the fleet's pods, the RF1M Jobs, the catalog batch) and ``engines`` on
NVIDIA's ``tensorrt`` image of the same release (the engine-build Jobs: it has TensorRT's Python
API, which the tritonserver image lacks). NGC numbers its containers by month, so both images of
release 24.10 carry the same TensorRT; engines are built there and served here.

TensorRT engines run only under the TensorRT version they were built with, so
``rfad-export triton-repo`` refuses engines whose recorded version (``engines.json``, written by
``rfad-export trt``) is not the image's (:func:`check_engine_tensorrt`). The Python packages the
image installs are pinned for its Python, CUDA and platform in ``constraints``, and
``tests/test_image.py`` resolves them for exactly that (``pip install --dry-run --python-version
... --platform ...``), since no image is built here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingImage:
    """One NVIDIA release as rfad uses it. ``tensorrt`` None: not declared (unverified here), so
    engines can be checked only against a version the operator names (``--image-tensorrt``)."""

    release: str  # NGC's YY.MM
    triton_image: str
    engine_image: str | None  # NVIDIA's TensorRT image of the release (None: none is published for the platform)
    triton: str
    tensorrt: str | None
    cuda: str
    python: str
    arch: str  # x86_64, aarch64
    glibc: tuple[int, int]  # of its OS (Ubuntu 22.04: 2.35): which manylinux wheels run there
    constraints: str | None  # the pins for its Python packages (a path in the source tree)

    def pip_platforms(self) -> list[str]:
        """Every manylinux platform tag whose wheels run in the image, newest first (pip install
        --platform takes them one by one: it does not widen one tag to the older ones)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        legacy = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
        return tags + [f"{name}_{self.arch}" for (_, m), name in legacy.items() if m <= minor
                       and (self.arch == "x86_64" or name == "manylinux2014")]


# Release 24.10 (= Triton 2.51, the server nvidia-pytriton ships for the local rfad-serve): CUDA
# 12.6.2, TensorRT 10.5.0, Python 3.10 on Ubuntu 22.04 (NVIDIA's 24.10 release notes).
NGC_24_10 = ServingImage(
    release="24.10", triton_image="nvcr.io/nvidia/tritonserver:24.10-py3",
    engine_image="nvcr.io/nvidia/tensorrt:24.10-py3", triton="2.51.0", tensorrt="10.5.0", cuda="12.6",
    python="3.10", arch="x86_64", glibc=(2, 35), constraints="constraints/ngc-24.10.txt")

# The Jetson (iGPU) variant of the same release. Not verified here: its TensorRT is JetPack's
# (not declared), PyPI has no CUDA build of torch or onnxruntime for aarch64, and NVIDIA publishes
# no TensorRT image for it: engines are built on the device (docs/deploying.md, Jetson).
NGC_24_10_IGPU = ServingImage(
    release="24.10", triton_image="nvcr.io/nvidia/tritonserver:24.10-py3-igpu", engine_image=None,
    triton="2.51.0", tensorrt=None, cuda="12.6", python="3.10", arch="aarch64", glibc=(2, 35), constraints=None)


def release_of(version: str) -> tuple[int, ...]:
    """``"10.5.0.18"`` -> (10, 5, 0): the major, minor and patch TensorRT engines must match."""
    try:
        return tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        raise ValueError(f"{version!r} is not a TensorRT version") from None


def check_engine_tensorrt(built_with: str | None, image: ServingImage | None, declared: str | None,
                          where: str) -> str:
    """The TensorRT version the engines will run under; a ValueError starting with ``where`` when
    the engines were built with another one, or when neither the image nor ``declared`` (the
    operator's ``--image-tensorrt``) says which one that is."""
    if built_with is None:
        raise ValueError(f"{where}: engines.json records no TensorRT version: rebuild them with rfad-export trt")
    serving = declared or (image.tensorrt if image is not None else None)
    if serving is None:
        name = image.triton_image if image is not None else "the serving image"
        raise ValueError(f"{where}: {name} declares no TensorRT version here: name the one it has with "
                         f"--image-tensorrt (the engines were built with {built_with})")
    if release_of(built_with) != release_of(serving):
        raise ValueError(f"{where}: built with TensorRT {built_with}, but the serving image has TensorRT {serving}: "
                         "engines run only under the version they were built with (rebuild them in "
                         f"{image.engine_image if image is not None and image.engine_image else 'the serving release'})")
    return serving
