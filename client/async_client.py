"""The asyncio client of the served ``rfad_pipeline`` and ``rfad_judge`` models (tritonclient.grpc.aio)."""

from __future__ import annotations

from collections.abc import Mapping

from rfad.client.endpoints import Resolver, resolve_addresses
from rfad.client.judge import JudgeResult, build_judge_request
from rfad.client.request import build_request
from rfad.client.result import Result
from rfad.client.security import ChannelSecurity
from rfad.client.transport import DEFAULT_URL, ClientSettings, import_tritonclient, run_async
from rfad.contract import JUDGE_INPUTS, JUDGE_MODEL, JUDGE_OUTPUTS, PIPELINE_INPUTS, PIPELINE_MODEL, PIPELINE_OUTPUTS


class AsyncRfadClient(ClientSettings):
    """:class:`rfad.client.RfadClient` for asyncio: the same arguments, awaitable methods.

    The gRPC channel belongs to an event loop, so it is opened on first use inside the running
    loop; use one instance per loop, and ``await close()`` (or ``async with``) at the end.
    """

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float | None = 600.0, retries: int = 3,
                 backoff_s: float = 0.5, model: str = PIPELINE_MODEL, endpoint_backoff_s: float = 2.0, *,
                 tls: bool = False, ca=None, cert=None, key=None, headers: Mapping[str, str] | None = None,
                 tls_server_name: str | None = None, resolver: Resolver = resolve_addresses):
        aioclient = import_tritonclient("tritonclient.grpc.aio")
        security = ChannelSecurity.create(tls, ca, cert, key, headers, tls_server_name)
        super().__init__(url, timeout_s, retries, backoff_s, model, endpoint_backoff_s, security, resolver)
        self._aio = aioclient
        self._connections = None

    def _channel(self) -> dict:
        if self._connections is None:
            self._connections = self._connect(self._aio)
        return self._connections

    async def generate(self, product, prompt: str, caption: str = "", negative_prompt: str = "",
                       seed: int | None = None, steps: int | None = None, guidance_scale: float | None = None,
                       controlnet_scale: float | None = None, candidates: int | None = None,
                       max_attempts: int | None = None, num_images: int | None = None,
                       threshold: float | None = None, screen_at: float | None = None,
                       screen_threshold: float | None = None, deadline_s: float | None = None,
                       request_id: str | None = None) -> Result:
        """See :meth:`rfad.client.RfadClient.generate`."""
        tensors = build_request(product, prompt, caption, negative_prompt, seed=seed, steps=steps,
                                guidance_scale=guidance_scale, controlnet_scale=controlnet_scale, candidates=candidates,
                                max_attempts=max_attempts, num_images=num_images, threshold=threshold,
                                screen_at=screen_at, screen_threshold=screen_threshold)
        return Result.from_outputs(*await run_async(self._infer_steps(
            self._channel(), self._aio, self.model, tensors, PIPELINE_INPUTS, PIPELINE_OUTPUTS, deadline_s,
            request_id)))

    async def judge(self, images, product, caption: str = "", threshold: float | None = None,
                    deadline_s: float | None = None, request_id: str | None = None) -> JudgeResult:
        """See :meth:`rfad.client.RfadClient.judge`."""
        tensors = build_judge_request(images, product, caption, threshold)
        return JudgeResult.from_outputs(*await run_async(self._infer_steps(
            self._channel(), self._aio, JUDGE_MODEL, tensors, JUDGE_INPUTS, JUDGE_OUTPUTS, deadline_s,
            request_id)))

    async def health(self, timeout_s: float = 5.0) -> dict:
        """See :meth:`rfad.client.RfadClient.health`."""
        return await run_async(self._health_steps(self._channel(), timeout_s))

    async def is_ready(self, timeout_s: float = 5.0) -> bool:
        """See :meth:`rfad.client.RfadClient.is_ready`."""
        return bool((await self.health(timeout_s))["model_ready"])

    async def wait_until_ready(self, timeout_s: float = 60.0, poll_s: float = 0.25) -> None:
        """See :meth:`rfad.client.RfadClient.wait_until_ready`."""
        await run_async(self._ready_steps(self._channel(), timeout_s, poll_s))

    async def close(self) -> None:
        """Close the gRPC channels (if they were opened)."""
        if self._connections is not None:
            for connection in self._connections.values():
                await connection.close()
            self._connections = None

    async def __aenter__(self) -> "AsyncRfadClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
