"""The client's errors: one :class:`RfadClientError` subclass per way a request can fail.

Each carries the gRPC status name and the server's (or the local check's) message, so an ad
system can tell a request to fix (:class:`InvalidRequestError`) from a server to wait for
(:class:`UnavailableError`) or a model the server does not have (:class:`ModelNotFoundError`)
without parsing text; and the request's id (``request_id``, the one the server logged), once it
was sent.
"""

from __future__ import annotations


class RfadClientError(RuntimeError):
    """A request failed. ``status`` is the gRPC status name (e.g. ``INVALID_ARGUMENT``; '' when none
    applies); ``local`` is True when the client refused the request before sending it."""

    def __init__(self, message: str, status: str = "", local: bool = False):
        super().__init__(message)
        self.status = status
        self.local = local
        self.request_id = ""  # set once the request was sent: the id the server logged it under

    @property
    def message(self) -> str:
        return str(self)


class InvalidRequestError(RfadClientError):
    """The request is invalid (checked locally or by the server); the message names the field."""


class ServerError(RfadClientError):
    """The server failed while processing the request (INTERNAL, NOT_FOUND, ...); the message is the server's."""


class ModelNotFoundError(ServerError):
    """The server has no model of that name (NOT_FOUND): a deployment that lacks it (e.g. no
    ``rfad_judge``) or a wrong model name; retrying, here or elsewhere, cannot help."""


class UnavailableError(RfadClientError):
    """The server could not be reached, also after the configured retries."""


class DeadlineExceededError(RfadClientError):
    """The request did not finish within its deadline; the server abandons it."""


class AccessDeniedError(RfadClientError):
    """The server refused this client: a restricted protocol without its header (status
    ``PERMISSION_DENIED``), or a TLS handshake that failed on a certificate (``UNAUTHENTICATED``).
    Retrying cannot help; the message says what was missing."""


def invalid_request(message: str) -> InvalidRequestError:
    """The error of a request the client refuses before sending it."""
    return InvalidRequestError(message, "INVALID_ARGUMENT", local=True)


_ERRORS_BY_STATUS = {"INVALID_ARGUMENT": InvalidRequestError, "UNAVAILABLE": UnavailableError,
                     "DEADLINE_EXCEEDED": DeadlineExceededError}


# Refusals that Triton 2.51 and gRPC report as UNAVAILABLE, which would otherwise be retried and
# mark the endpoint down: a restricted protocol without its header, and a TLS handshake that
# failed on the server's certificate (an untrusted CA, another host name). A mutual-TLS server that
# gets no client certificate or one it does not trust, or a TLS server reached in plain text, just
# closes the socket: the client cannot tell that from a server going away, so it stays UNAVAILABLE.
_REFUSALS = (("This protocol is restricted", "PERMISSION_DENIED"),
             ("CERTIFICATE_VERIFY_FAILED", "UNAUTHENTICATED"), ("Hostname Verification Check failed", "UNAUTHENTICATED"))

# Triton 2.51's NOT_FOUND messages (seen here): a model the repository lacks is "Request for unknown
# model: 'x' is not found"; one that is being unloaded because the server is stopping is "...
# 'x' has no available versions": that server is going away, so the request belongs elsewhere.
_UNLOADING = "has no available versions"


def error_from_exception(exc: Exception) -> RfadClientError:
    """The :class:`RfadClientError` for a tritonclient ``InferenceServerException``."""
    status = str(exc.status() or "") if hasattr(exc, "status") else ""
    status = status.removeprefix("StatusCode.")
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    if status == "UNAVAILABLE":
        for marker, refusal in _REFUSALS:
            if marker in (message or ""):
                return AccessDeniedError(message, refusal)
    if status == "NOT_FOUND":
        return (UnavailableError if _UNLOADING in (message or "") else ModelNotFoundError)(message, status)
    return _ERRORS_BY_STATUS.get(status, ServerError if status else RfadClientError)(message or status, status)
