"""rfad.client: the gRPC client of the rfad_pipeline model (imports neither torch nor diffusers)."""

from rfad.client.client import (
    DeadlineExceededError,
    InvalidRequestError,
    RfadClient,
    RfadClientError,
    Result,
    ServerError,
    UnavailableError,
)

__all__ = ["RfadClient", "Result", "RfadClientError", "InvalidRequestError", "ServerError", "UnavailableError",
           "DeadlineExceededError"]
