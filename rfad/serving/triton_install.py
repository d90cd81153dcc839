"""Find the Triton Inference Server that the ``nvidia-pytriton`` wheel ships, and lay out what it needs.

The wheel carries a complete ``tritonserver`` binary (2.51, python backend only), the python
backend (``backends/python``) and one ``triton_python_backend_stub`` per Python version
(``python_backend_stubs/3.X``). :class:`TritonInstall` finds those files without importing
pytriton (its own Python layer is not used) and prepares a launch:

- ``--backend-directory`` points at a per-server folder whose ``python/`` holds links to the
  backend library, ``triton_python_backend_utils.py`` and the stub of the RUNNING Python; a
  stub of another version would start a different interpreter that lacks our packages.
- The stub finds its Python environment by running ``python3`` from PATH (PYTHONPATH is
  ignored), so this interpreter's ``bin`` folder goes first on the server's PATH.
- The backend library and the stub are linked with an RPATH relative to their own location in
  the wheel; reached through links they no longer find the wheel's bundled libraries, so that
  folder goes on LD_LIBRARY_PATH (pytriton does the same). This interpreter's ``libpython``
  folder goes first, so the stub loads the same ``libpython3.X.so`` build as this interpreter
  rather than the distribution's copy of that version.

Only the standard library is needed to import this module.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from rfad.serving.start_errors import TritonNotInstalledError

INSTALL_HINT = 'install the serving extra: pip install "rfad[serve]"'


@dataclass(frozen=True)
class TritonInstall:
    """The files of the wheel's Triton server that a launch needs.

    ``libs`` is the folder of bundled shared libraries (``nvidia_pytriton.libs`` beside the
    package in a wheel install, ``tritonserver/external_libs`` in an editable install).
    """

    binary: Path
    backend_library: Path
    backend_utils: Path
    stub: Path
    libs: Path | None
    python_version: str

    @classmethod
    def locate(cls, python_version: str | None = None) -> "TritonInstall":
        """Find the wheel's server for ``python_version`` (default: the running Python, "3.X").

        Raises :class:`TritonNotInstalledError` naming the missing path and how to install it.
        The package is found without being imported (importing pytriton loads its whole stack).
        """
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotInstalledError(f"Triton Inference Server not found: the nvidia-pytriton wheel is not "
                                          f"installed in {sys.prefix} ({INSTALL_HINT})")
        package = Path(list(spec.submodule_search_locations)[0])
        root = package / "tritonserver"
        stubs = root / "python_backend_stubs"
        install = cls(binary=root / "bin" / "tritonserver",
                      backend_library=root / "backends" / "python" / "libtriton_python.so",
                      backend_utils=root / "backends" / "python" / "triton_python_backend_utils.py",
                      stub=stubs / version / "triton_python_backend_stub",
                      libs=next((p for p in (package.parent / "nvidia_pytriton.libs", root / "external_libs")
                                 if p.is_dir()), None),
                      python_version=version)
        for what, path in (("server binary", install.binary), ("python backend", install.backend_library),
                           ("python backend utilities", install.backend_utils)):
            if not path.is_file():
                raise TritonNotInstalledError(f"Triton {what} missing: {path} (the nvidia-pytriton install is "
                                              f"incomplete; reinstall it: {INSTALL_HINT})")
        if not install.stub.is_file():
            have = sorted(p.name for p in stubs.iterdir() if (p / "triton_python_backend_stub").is_file()) \
                if stubs.is_dir() else []
            raise TritonNotInstalledError(
                f"no python backend stub for Python {version}: {install.stub} does not exist (this nvidia-pytriton "
                f"has stubs for {', '.join(have) or 'no version'}; run the server from a Python of one of those "
                f"versions with {INSTALL_HINT})")
        return install

    def backend_directory(self, into: Path) -> Path:
        """Create ``into/python/`` with links to the backend library, its utilities and the stub; return ``into``."""
        python = Path(into) / "python"
        python.mkdir(parents=True, exist_ok=True)
        for source in (self.backend_library, self.backend_utils, self.stub):
            link = python / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
        return Path(into)

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The server's environment: ``base`` (default ``os.environ``) with PATH and LD_LIBRARY_PATH set (module docstring)."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent)] + ([env["PATH"]] if env.get("PATH") else []))
        library_path = []
        libdir = sysconfig.get_config_var("LIBDIR")
        if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
            library_path.append(libdir)
        if self.libs is not None:
            # Every bundled library has a hash in its file name, so putting this folder early
            # cannot shadow a same-named library of the user's own (e.g. a CUDA runtime).
            library_path.append(str(self.libs))
        if env.get("LD_LIBRARY_PATH"):
            library_path.append(env["LD_LIBRARY_PATH"])
        if library_path:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
        return env
