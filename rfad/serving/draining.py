"""Draining a server before it stops, so that scale-down and rollouts lose no request.

Triton's own shutdown does not finish an ``rfad_pipeline`` loop: on SIGTERM, Triton 2.51 refuses
every new inference at once, the BLS calls of loops already running included (seen here: the
loop fails with ``Model controlnet_unet - Error when running inference: Server not ready``), so
``--exit-timeout-secs`` alone saves no loop. Draining happens before the signal instead:

1. (Kubernetes) wait a few seconds, so that the Service and DNS drop the pod while it still serves;
2. create the drain file (``$RFAD_DRAIN_FILE``): from then on ``rfad_pipeline`` answers new
   requests UNAVAILABLE ("draining"), and :mod:`rfad.client` sends them to another server at once;
3. wait until no ``rfad_pipeline`` request is running or queued (the model's
   ``rfad_requests_in_flight`` gauge and Triton's ``nv_inference_pending_request_count``), at
   most the deployment profile's worst-case loop time (:mod:`rfad.deploy.draining`);
4. stop Triton (SIGTERM).

The Kubernetes manifests run steps 1-3 as the container's preStop hook
(``python3 -m rfad.serving.draining``); ``rfad-serve`` runs 2-4 when it gets SIGTERM or Ctrl-C,
and so does :meth:`rfad.serving.launcher.TritonServer.drain` for tests.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rfad.contract import PIPELINE_MODEL
from rfad.serving.metrics_page import fetch_metrics, metric_sum

DRAIN_FILE_ENV = "RFAD_DRAIN_FILE"
IN_FLIGHT_METRIC = "rfad_requests_in_flight"
PENDING_METRIC = "nv_inference_pending_request_count"  # Triton's: queued, not yet executing


class DrainError(RuntimeError):
    """The server cannot be drained (its metrics page is unreachable or lacks the in-flight gauge)."""


def drain_file_from_environment() -> Path | None:
    """The drain file ``$RFAD_DRAIN_FILE`` names; None when it is unset (the server cannot be drained)."""
    value = os.environ.get(DRAIN_FILE_ENV, "")
    return Path(value) if value else None


def busy_requests(metrics_text: str, model: str = PIPELINE_MODEL) -> int:
    """``model``'s requests running or queued, from the server's metrics page. Raises
    :class:`DrainError` when the page lacks the in-flight gauge (a repository written by an rfad
    without draining: rewrite it with ``rfad-export triton-repo``)."""
    running = metric_sum(metrics_text, IN_FLIGHT_METRIC, model=model)
    if running is None:
        raise DrainError(f"the metrics page has no {IN_FLIGHT_METRIC} for {model}: the repository predates "
                         "draining (rewrite it with rfad-export triton-repo)")
    return int(running + (metric_sum(metrics_text, PENDING_METRIC, model=model) or 0))


@dataclass(frozen=True)
class DrainResult:
    drained: bool  # no request left running or queued
    seconds: float  # spent waiting
    busy: int  # requests still running or queued when it returned


def drain(metrics_url: str, drain_file: Path, timeout_s: float, poll_s: float = 0.25,
          refusing: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> DrainResult:
    """Create ``drain_file`` (new ``rfad_pipeline`` requests are refused from then on; ``refusing``
    is called then) and wait until none is running or queued, at most ``timeout_s``. Raises
    :class:`DrainError` when the metrics page at ``metrics_url`` cannot be read."""
    drain_file.parent.mkdir(parents=True, exist_ok=True)
    drain_file.touch()
    if refusing is not None:
        refusing()
    start = clock()
    while True:
        try:
            busy = busy_requests(fetch_metrics(metrics_url, timeout_s=5.0))
        except (urllib.error.URLError, OSError) as exc:
            raise DrainError(f"{metrics_url}: {exc}") from None
        waited = clock() - start
        if busy == 0 or waited >= timeout_s:
            return DrainResult(busy == 0, waited, busy)
        sleep(poll_s)


def _main(argv: list[str] | None = None) -> None:
    import click

    @click.command()
    @click.option("--metrics-url", default="http://127.0.0.1:8002/metrics", show_default=True,
                  help="Triton's metrics page.")
    @click.option("--endpoint-delay", "endpoint_delay_s", default=15.0, show_default=True, type=float,
                  help="Seconds to keep serving first, while the Service and DNS drop this pod.")
    @click.option("--timeout", "timeout_s", required=True, type=float,
                  help="Longest wait for the requests in flight (the profile's worst-case loop time).")
    def command(metrics_url, endpoint_delay_s, timeout_s) -> None:
        """Drain this pod's Triton server (the preStop hook of rfad's Kubernetes manifests)."""
        drain_file = drain_file_from_environment()
        if drain_file is None:
            raise click.ClickException(f"{DRAIN_FILE_ENV} is not set: rfad_pipeline has no drain file to watch")
        time.sleep(endpoint_delay_s)
        try:
            result = drain(metrics_url, drain_file, timeout_s)
        except DrainError as exc:
            raise click.ClickException(str(exc)) from None
        state = "drained" if result.drained else f"timed out with {result.busy} request(s) in flight"
        click.echo(f"rfad drain: {state} after {result.seconds:.1f} s")
        sys.exit(0 if result.drained else 1)

    command.main(args=argv, prog_name="python -m rfad.serving.draining")


if __name__ == "__main__":
    _main()
