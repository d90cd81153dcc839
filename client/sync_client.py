"""The blocking client of the served ``rfad_pipeline`` and ``rfad_judge`` models (tritonclient.grpc)."""

from __future__ import annotations

from collections.abc import Mapping

from rfad.client.endpoints import Resolver, resolve_addresses
from rfad.client.judge import JudgeResult, build_judge_request
from rfad.client.request import build_request
from rfad.client.result import Result
from rfad.client.security import ChannelSecurity
from rfad.client.transport import DEFAULT_URL, ClientSettings, import_tritonclient, run_blocking
from rfad.contract import JUDGE_INPUTS, JUDGE_MODEL, JUDGE_OUTPUTS, PIPELINE_INPUTS, PIPELINE_MODEL, PIPELINE_OUTPUTS


class RfadClient(ClientSettings):
    """Blocking client of ``rfad_pipeline`` at ``url``: host:port of Triton's gRPC endpoint, or
    several (``"a:8001,b:8001"`` or a list) that requests go to in turn; ``dns:///name:port`` stands
    for every address ``name`` resolves to (a Kubernetes headless Service: one per ready pod),
    looked up again as the fleet scales (``resolver`` does the lookup: :mod:`rfad.client.endpoints`).

    ``timeout_s`` is the default deadline of a request (None: no deadline), overridden per
    call by ``deadline_s``; retries of UNAVAILABLE count against the same deadline. ``retries``
    is how many times an UNAVAILABLE request is retried, waiting ``backoff_s``, 2x, 4x, ...
    between tries (with several endpoints: after every endpoint failed it). An endpoint that
    answered UNAVAILABLE is skipped for ``endpoint_backoff_s`` (doubling while it keeps failing)
    and comes back once a health check passes; so is one that answers INTERNAL several times in a
    row. A model the server lacks (NOT_FOUND) fails at once. ``endpoints.summary()`` counts per endpoint.
    Safe to share between threads for ``generate``.

    Connection security (:mod:`rfad.client.security`), the same for every endpoint: ``tls``
    speaks TLS trusting the system's CAs, ``ca`` (a PEM file) trusts that CA instead; ``cert`` and
    ``key`` (PEM files) are the client's certificate for servers that require mutual TLS;
    ``tls_server_name`` is the name to verify when the address is not in the certificate (a
    pod's IP); ``ca``, ``cert`` or ``tls_server_name`` imply TLS. ``headers`` go with every call
    (e.g. ``{"authorization": "Bearer ..."}`` for a gateway, or ``triton-grpc-protocol-<key>`` for
    ``rfad-serve --restrict-header <key>``). A bad file or header is a ValueError naming it.
    """

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float | None = 600.0, retries: int = 3,
                 backoff_s: float = 0.5, model: str = PIPELINE_MODEL, endpoint_backoff_s: float = 2.0, *,
                 tls: bool = False, ca=None, cert=None, key=None, headers: Mapping[str, str] | None = None,
                 tls_server_name: str | None = None, resolver: Resolver = resolve_addresses):
        grpcclient = import_tritonclient("tritonclient.grpc")
        security = ChannelSecurity.create(tls, ca, cert, key, headers, tls_server_name)
        super().__init__(url, timeout_s, retries, backoff_s, model, endpoint_backoff_s, security, resolver)
        self._grpc = grpcclient
        self._connections = self._connect(grpcclient)

    def generate(self, product, prompt: str, caption: str = "", negative_prompt: str = "", seed: int | None = None,
                 steps: int | None = None, guidance_scale: float | None = None,
                 controlnet_scale: float | None = None, candidates: int | None = None,
                 max_attempts: int | None = None, num_images: int | None = None, threshold: float | None = None,
                 screen_at: float | None = None, screen_threshold: float | None = None,
                 deadline_s: float | None = None, request_id: str | None = None) -> Result:
        """Generate ad images for ``product`` (a path, PNG/WebP bytes with alpha, or a PIL RGBA image).

        A setting left None takes the server's default (``screen_at`` None: no early screening).
        ``deadline_s`` (default ``timeout_s``) bounds the whole call including retries.
        ``request_id`` names the request in the server's log (default: a random one), the same on
        every retry. Raises :class:`InvalidRequestError`, :class:`ServerError`
        (:class:`ModelNotFoundError` for a model the server lacks), :class:`UnavailableError` or
        :class:`DeadlineExceededError`.
        """
        tensors = build_request(product, prompt, caption, negative_prompt, seed=seed, steps=steps,
                                guidance_scale=guidance_scale, controlnet_scale=controlnet_scale, candidates=candidates,
                                max_attempts=max_attempts, num_images=num_images, threshold=threshold,
                                screen_at=screen_at, screen_threshold=screen_threshold)
        return Result.from_outputs(*run_blocking(self._infer_steps(
            self._connections, self._grpc, self.model, tensors, PIPELINE_INPUTS, PIPELINE_OUTPUTS, deadline_s,
            request_id)))

    def judge(self, images, product, caption: str = "", threshold: float | None = None,
              deadline_s: float | None = None, request_id: str | None = None) -> JudgeResult:
        """RFNet's verdict on ad images made elsewhere (the ``rfad_judge`` model).

        ``images``: up to ``JUDGE_MAX_IMAGES`` encoded images (paths, bytes or PIL images) of one
        size, showing ``product`` (the cut-out, as for :meth:`generate`). ``threshold``: the
        p(Available) needed (server default 0.5). Raises as :meth:`generate` does; a bad image is
        an :class:`InvalidRequestError` naming its index.
        """
        tensors = build_judge_request(images, product, caption, threshold)
        return JudgeResult.from_outputs(*run_blocking(self._infer_steps(
            self._connections, self._grpc, JUDGE_MODEL, tensors, JUDGE_INPUTS, JUDGE_OUTPUTS, deadline_s,
            request_id)))

    def health(self, timeout_s: float = 5.0) -> dict:
        """Server and model state: ``{"url", "live", "ready", "model", "model_ready", "server_version", "error"}``
        (several endpoints: ready when every one is, each state under ``"endpoints"``).

        Never raises for an unreachable server: ``error`` says why it is not ready.
        """
        return run_blocking(self._health_steps(self._connections, timeout_s))

    def is_ready(self, timeout_s: float = 5.0) -> bool:
        """True when the server is ready and serves the pipeline model."""
        return bool(self.health(timeout_s)["model_ready"])

    def wait_until_ready(self, timeout_s: float = 60.0, poll_s: float = 0.25) -> None:
        """Block until :meth:`is_ready`; raises :class:`UnavailableError` after ``timeout_s``."""
        run_blocking(self._ready_steps(self._connections, timeout_s, poll_s))

    def close(self) -> None:
        """Close the gRPC channels."""
        for connection in self._connections.values():
            connection.close()

    def __enter__(self) -> "RfadClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
