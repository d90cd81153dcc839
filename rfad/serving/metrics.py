"""Custom Prometheus metrics of ``rfad_pipeline``, on Triton's metrics endpoint (``/metrics``).

Triton's own metrics count requests and time per model; these count what the loop did inside
them, so an operator sees the availability rate and attempts per request, and a test sees
that a cancelled request stopped stepping:

- ``rfad_denoising_steps_total``: DDIM steps executed (one per batch of candidates, whatever
  step each candidate of the batch is at under early screening);
- ``rfad_attempts_total``, ``rfad_candidates_total``, ``rfad_candidates_available_total``;
- ``rfad_candidates_screened_total``: candidates early screening replaced mid-loop;
- ``rfad_requests_total{outcome=...}``: ``ok``, ``invalid``, ``cancelled``, ``failed``, and
  ``draining`` (refused UNAVAILABLE while the server drains: :mod:`rfad.serving.draining`);
- ``rfad_request_retries_total``: requests that were a client's retry (try number > 1, sent by
  :mod:`rfad.client` with the request's id unchanged: :mod:`rfad.serving.request_trace`);
- ``rfad_requests_in_flight`` (gauge): requests whose loop is running now; the drain waits for 0;
- ``rfad_bls_calls_total{component=...}`` and ``rfad_bls_seconds_total{component=...}``: BLS
  calls to each model and their round trips as the pipeline sees them (request built, sent,
  answered, outputs in hand); beside Triton's own time of that model per request
  (``nv_inference_request_duration_us``) the difference is what a BLS call costs.

Built on ``pb_utils.MetricFamily`` (the python backend's metrics API); created once per model
instance in ``initialize`` and kept for its lifetime.
"""

from __future__ import annotations

OUTCOMES = ("ok", "invalid", "cancelled", "failed", "draining")


class PipelineMetrics:
    def __init__(self, pb_utils, model: str):
        counter = pb_utils.MetricFamily.COUNTER
        labels = {"model": model}
        self._families = {
            "steps": pb_utils.MetricFamily("rfad_denoising_steps_total", "DDIM steps executed by rfad_pipeline", counter),
            "attempts": pb_utils.MetricFamily("rfad_attempts_total", "Attempts (batches of candidates) generated", counter),
            "candidates": pb_utils.MetricFamily("rfad_candidates_total", "Candidates generated", counter),
            "available": pb_utils.MetricFamily("rfad_candidates_available_total",
                                               "Candidates judged Available", counter),
            "screened": pb_utils.MetricFamily("rfad_candidates_screened_total",
                                              "Candidates early screening replaced mid-loop", counter),
            "requests": pb_utils.MetricFamily("rfad_requests_total", "rfad_pipeline requests by outcome", counter),
            "retries": pb_utils.MetricFamily("rfad_request_retries_total",
                                             "Requests that were a client's retry (try number > 1)", counter),
            "in_flight": pb_utils.MetricFamily("rfad_requests_in_flight", "rfad_pipeline requests running now",
                                               pb_utils.MetricFamily.GAUGE),
            "bls_calls": pb_utils.MetricFamily("rfad_bls_calls_total", "BLS calls by rfad_pipeline, per model", counter),
            "bls_seconds": pb_utils.MetricFamily("rfad_bls_seconds_total",
                                                 "Round trip of rfad_pipeline's BLS calls, per model", counter),
        }
        self._labels = labels
        self._metrics = {name: family.Metric(labels=labels) for name, family in self._families.items()
                         if name not in ("requests", "bls_calls", "bls_seconds")}
        self._requests = {outcome: self._families["requests"].Metric(labels={**labels, "outcome": outcome})
                          for outcome in OUTCOMES}
        self._bls: dict[str, tuple] = {}

    def step(self) -> None:
        self._metrics["steps"].increment(1)

    def finished(self, result) -> None:
        """A :class:`rfad.pipeline.generate.GenerationResult`: attempts, candidates, Available ones, screened ones."""
        self._metrics["attempts"].increment(result.attempts)
        self._metrics["screened"].increment(len(result.screened))
        self._metrics["candidates"].increment(len(result.candidates))
        self._metrics["available"].increment(sum(bool(c.available) for c in result.candidates))

    def request(self, outcome: str) -> None:
        self._requests[outcome].increment(1)

    def retry(self) -> None:
        self._metrics["retries"].increment(1)

    def in_flight(self, change: int) -> None:
        """+1 when a request starts, -1 when it has its response."""
        self._metrics["in_flight"].increment(change)

    def bls_call(self, component: str, seconds: float) -> None:
        """One BLS call to ``component`` that took ``seconds`` (the runner reports each one)."""
        if component not in self._bls:
            labels = {**self._labels, "component": component}
            self._bls[component] = (self._families["bls_calls"].Metric(labels=labels),
                                    self._families["bls_seconds"].Metric(labels=labels))
        calls, total = self._bls[component]
        calls.increment(1)
        total.increment(seconds)
