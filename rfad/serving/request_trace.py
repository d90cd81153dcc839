"""Who sent a served request and how often: the request id and the try number the client sent.

:mod:`rfad.client` gives every request an id (Triton's request id, which Triton echoes in the
response) and numbers its tries in the request parameter ``rfad_try``
(:data:`rfad.contract.REQUEST_TRY_PARAMETER`), so one logical request keeps one id across its
retries and a retry is visible on the server: ``rfad_pipeline`` logs each request's id, try and
outcome, and counts retries (:mod:`rfad.serving.metrics`). Pure functions, testable without Triton.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rfad.contract import MAX_REQUEST_ID_LENGTH, REQUEST_TRY_PARAMETER, InvalidRequest


@dataclass(frozen=True)
class RequestTrace:
    request_id: str  # '' when the client sent none
    try_number: int  # 1: a first try; 2, 3, ...: retries of the same request

    @property
    def retry(self) -> bool:
        return self.try_number > 1

    def describe(self) -> str:
        """``request 'abc' try 2`` (``request (no id) try 1`` without an id), for log lines."""
        name = repr(self.request_id) if self.request_id else "(no id)"
        return f"request {name} try {self.try_number}"


def request_trace(request_id: str, parameters_json: str) -> RequestTrace:
    """The trace of a request from its id and its parameters (the python backend's
    ``request.parameters()``, a JSON object). Raises :class:`InvalidRequest` naming the field for
    an id over :data:`MAX_REQUEST_ID_LENGTH` characters or a try number that is not an integer >= 1."""
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidRequest(f"request id: {len(request_id)} characters, over the limit of {MAX_REQUEST_ID_LENGTH}")
    # Triton writes this JSON object itself from the request's typed parameters.
    value = json.loads(parameters_json or "{}").get(REQUEST_TRY_PARAMETER, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"parameter {REQUEST_TRY_PARAMETER}: expected an integer >= 1, got {value!r}")
    return RequestTrace(request_id, value)
