"""Serving: the local Triton launcher (``rfad-serve``) and the request/response mapping of ``rfad_pipeline``.

The launcher needs only the standard library to import (tritonclient is imported when a server
starts), so importing this package from the BLS model or from ad-system code stays cheap.
"""

from rfad.serving.launcher import TritonServer, free_port, free_ports, port_is_free
from rfad.serving.start_errors import ServerStartCancelled, ServerStartError, TritonNotInstalledError
from rfad.serving.triton_install import TritonInstall

__all__ = ["TritonServer", "TritonInstall", "ServerStartError", "ServerStartCancelled", "TritonNotInstalledError",
           "free_port", "free_ports", "port_is_free"]
