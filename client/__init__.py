"""rfad.client: the gRPC client of the served rfad_pipeline and rfad_judge models, for ad systems.

Imports neither torch nor diffusers: it needs numpy, tritonclient[grpc], click and tqdm
(Pillow only to pass PIL images). The request contract comes from :mod:`rfad.contract`.
"""

from rfad.client.async_client import AsyncRfadClient
from rfad.client.errors import (
    AccessDeniedError,
    DeadlineExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    RfadClientError,
    ServerError,
    UnavailableError,
)
from rfad.client.request import build_request
from rfad.client.result import Result
from rfad.client.sync_client import RfadClient
from rfad.client.judge import JudgeResult, build_judge_request

__all__ = ["RfadClient", "AsyncRfadClient", "Result", "JudgeResult", "build_request", "build_judge_request",
           "RfadClientError", "InvalidRequestError", "ModelNotFoundError", "ServerError", "UnavailableError",
           "DeadlineExceededError", "AccessDeniedError"]
