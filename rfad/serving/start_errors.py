"""Why a local Triton server did not start: the errors :class:`rfad.serving.launcher.TritonServer`
and :class:`rfad.serving.triton_install.TritonInstall` raise, one family that callers (``rfad-serve``,
``rfad demo``) catch as :class:`ServerStartError`. Standard library only."""

from __future__ import annotations


class ServerStartError(RuntimeError):
    """The server could not be started, exited while starting, or was not ready in time.

    ``failed_models`` names the models the server log reports as failed to load (possibly
    empty); ``log_tail`` is the end of the server log.
    """

    def __init__(self, message: str, failed_models: tuple[str, ...] = (), log_tail: str = ""):
        super().__init__(message)
        self.failed_models = failed_models
        self.log_tail = log_tail


class TritonNotInstalledError(ServerStartError):
    """The Triton binary, the python backend or the stub for this Python version is missing."""


class ServerStartCancelled(ServerStartError):
    """:meth:`TritonServer.start` was cancelled (its ``cancel`` event was set) before the server was ready."""
