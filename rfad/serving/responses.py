"""One response per request, never an exception out of ``execute``: shared by rfad's python models.

A python-backend model that raises from ``execute`` fails every request of the batch (and a
bug in one request must not cost the others), so each model handles its requests one by one
through :func:`respond_each`: a handler returns the request's response (an error response
for a bad request); anything it raises becomes an INTERNAL error naming the model.
"""

from __future__ import annotations

from typing import Callable


def error_response(pb_utils, message: str, code):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def respond_each(pb_utils, model: str, requests, handle: Callable, on_bug: Callable[[], None] | None = None) -> list:
    """``[handle(request) for request in requests]``, an unexpected exception turned into that
    request's INTERNAL error (``on_bug`` is called for each, e.g. to count it)."""
    responses = []
    for request in requests:
        try:
            responses.append(handle(request))
        except Exception as exc:  # noqa: BLE001 - a bug must fail one request, never the server
            if on_bug is not None:
                on_bug()
            responses.append(error_response(pb_utils, f"{model}: {type(exc).__name__}: {exc}",
                                            pb_utils.TritonError.INTERNAL))
    return responses
