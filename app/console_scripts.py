"""The console scripts of the stage CLIs (pyproject.toml ``[project.scripts]``).

Each checks the extra its command needs (:mod:`rfad.extras`) BEFORE importing the command's
module, because those modules import their stack (torch, accelerate, ...) as they load: without
the extra, ``rfad-train`` prints one line naming the extra and exits 1 instead of a traceback.
A thin front door like :mod:`rfad.app.cli`: nothing imports it, and it names the stage modules only
as strings.
"""

from __future__ import annotations

import importlib
import sys
from functools import partial

from rfad.extras import MissingExtras, require_extras

# console script -> (the extras it needs, the click command it runs)
SCRIPTS = {
    "rfad-data": (("train",), "rfad.trainer.data.cli:main"),
    "rfad-train": (("train",), "rfad.trainer.cli:main"),
    "rfad-export": (("export",), "rfad.export.cli:main"),
    "rfad-serve": (("serve",), "rfad.serving.cli:main"),
    "rfad-client": (("client",), "rfad.client.cli:main"),
}


def run(script: str) -> None:
    """Run console script ``script`` once its extras are known to be installed."""
    extras, target = SCRIPTS[script]
    try:
        require_extras(script, *extras)
    except MissingExtras as exc:
        exc.show()
        sys.exit(exc.exit_code)
    module, function = target.split(":")
    getattr(importlib.import_module(module), function)(prog_name=script)


# The functions pyproject.toml names.
rfad_data = partial(run, "rfad-data")
rfad_train = partial(run, "rfad-train")
rfad_export = partial(run, "rfad-export")
rfad_serve = partial(run, "rfad-serve")
rfad_client = partial(run, "rfad-client")
