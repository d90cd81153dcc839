"""rfad_pipeline: the regenerate-until-available loop as a Triton python (BLS) model.

Thin on purpose: parse the request into a validated one (rfad.serving.pipeline_io), run the
ONE loop of rfad.pipeline with the Triton runner (BLS calls to the component models), build
the response. Errors travel in the response: a bad request is INVALID_ARGUMENT naming the
field; a failing component is INTERNAL naming the component; a cancelled request stops between
denoising steps. The model itself never raises out of execute(), so the server keeps serving.
Custom metrics (rfad.serving.metrics) count steps, attempts, candidates, screened candidates,
outcomes, retries and the requests in flight. Every request's id and try number
(rfad.serving.request_trace) is logged with its outcome. While the drain file exists
(rfad.serving.draining) new requests are refused UNAVAILABLE, so clients move to another server
while the loops in flight finish. Early screening (a request's screen_at) judges previews with the
screening RFNet where the repository serves one (screen_rfnet_text, screen_rfnet, beside depth and
saliency), else with the pipeline's judge; a judge-'none' repository refuses it as
INVALID_ARGUMENT naming screen_at.
"""

import json
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils

from rfad.canvas import CanvasError, prepare_canvas
from rfad.components.manifest import ExportManifest
from rfad.contract import PIPELINE_INPUTS, InvalidRequest
from rfad.pipeline.denoise import GenerationCancelled
from rfad.pipeline.generate import generate
from rfad.pipeline.judge import RunnerJudge
from rfad.pipeline.settings import GenerationSettings
from rfad.serving.draining import DRAIN_FILE_ENV, drain_file_from_environment
from rfad.serving.metrics import PipelineMetrics
from rfad.serving.pipeline_parameters import PipelineParameters
from rfad.serving.pipeline_io import build_pipeline_response, parse_pipeline_request
from rfad.serving.request_trace import request_trace
from rfad.serving.responses import error_response, respond_each
from rfad.serving.triton_runner import ComponentError, EnsembleJudge, TritonRunner


def _error(message: str, code) -> "pb_utils.InferenceResponse":
    return error_response(pb_utils, message, code)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        model_dir = Path(args["model_repository"])
        assets = model_dir / args["model_version"] / "assets"
        # Unknown or unusable parameters fail the load, naming the parameter (the server does not start).
        values = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        parameters = PipelineParameters.from_config(values)
        parameters.check_judge(model_dir.parent, assets)
        self.limits = parameters.limits()
        self.default_steps = parameters.default_steps
        # Products are placed as the models declare (the export manifest's canvas), at canvas_size.
        self.canvas_spec = ExportManifest.read(assets / "components.json", "rfad_pipeline assets").canvas_spec(
            parameters.canvas_size)
        # A GPU instance keeps the loop's tensors on its GPU; the runner asks the components for
        # outputs there too, so nothing crosses to the host between components.
        device = f"cuda:{args['model_instance_device_id']}" if args["model_instance_kind"] == "GPU" else "cpu"
        self.metrics = PipelineMetrics(pb_utils, config["name"])
        self.runner = TritonRunner(assets, pb_utils, device=device, observe=self.metrics.bls_call)
        # Judge modes: rfad.serving.pipeline_parameters.JUDGE_MODES.
        self.judge_mode = parameters.judge
        self.judge = RunnerJudge(self.runner) if self.judge_mode == "components" else None
        # Early screening's own RFNet, where the repository serves one (and a judge to go with it).
        self.screen_judge = (RunnerJudge(self.runner, screen=True)
                             if self.runner.info.screen_judge and self.judge_mode != "none" else None)
        self.drain_file = drain_file_from_environment()
        if self.drain_file is None:
            pb_utils.Logger.log_warn(f"rfad_pipeline: {DRAIN_FILE_ENV} is not set, so this server cannot be drained: "
                                     "requests in flight when it stops are lost (docs/deploying.md)")

    def _inputs(self, request) -> dict:
        inputs = {}
        for field in PIPELINE_INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, field.name)
            inputs[field.name] = None if tensor is None else tensor.as_numpy()
        return inputs

    def _handle(self, request):
        """Trace the request, refuse it while draining, else run it; log its outcome with its id."""
        try:
            trace = request_trace(request.request_id(), request.parameters())
        except InvalidRequest as exc:
            self.metrics.request("invalid")
            return _error(str(exc), pb_utils.TritonError.INVALID_ARG)
        # Counted before the drain file is looked at: a drain that has created the file and then
        # reads 0 in flight cannot miss a request that is about to start.
        self.metrics.in_flight(1)
        started = time.monotonic()
        try:
            if trace.retry:
                self.metrics.retry()
            if self.drain_file is not None and self.drain_file.exists():
                self.metrics.request("draining")
                response, outcome = _error("rfad_pipeline: this server is draining (shutting down); send the request "
                                           "to another server", pb_utils.TritonError.UNAVAILABLE), "refused: draining"
            else:
                response, outcome = self._run(request)
        finally:
            self.metrics.in_flight(-1)
        pb_utils.Logger.log_info(f"rfad_pipeline {trace.describe()}: {outcome} ({time.monotonic() - started:.2f} s)")
        return response

    def _run(self, request):
        """(response, outcome for the log) of one request."""
        try:
            parsed = parse_pipeline_request(self._inputs(request), self.limits)
            # A request without steps gets the repository's default (its deployment profile's).
            settings = GenerationSettings(**{"steps": self.default_steps, **parsed.settings}, limits=self.limits)
            canvas = prepare_canvas(parsed.product_image, self.canvas_spec)
        except (InvalidRequest, CanvasError) as exc:
            self.metrics.request("invalid")
            return _error(str(exc), pb_utils.TritonError.INVALID_ARG), f"invalid: {exc}"
        judge = (EnsembleJudge(pb_utils, parsed.product_image, self.metrics.bls_call) if self.judge_mode == "ensemble"
                 else self.judge)
        if settings.screening and judge is None:
            self.metrics.request("invalid")
            message = "screen_at: early screening needs a judge, and this repository's rfad_pipeline judges with 'none'"
            return _error(message, pb_utils.TritonError.INVALID_ARG), f"invalid: {message}"
        try:
            result = generate(self.runner, canvas, parsed.prompt, settings, negative_prompt=parsed.negative_prompt,
                              caption=parsed.caption, judge=judge, should_stop=request.is_cancelled,
                              on_step=lambda done, total: self.metrics.step(), screen_judge=self.screen_judge)
        except GenerationCancelled as exc:
            self.metrics.request("cancelled")
            return _error(str(exc), pb_utils.TritonError.CANCELLED), "cancelled"
        except ComponentError as exc:
            self.metrics.request("failed")
            return _error(str(exc), pb_utils.TritonError.INTERNAL), f"failed: {exc}"
        finally:
            self.runner.release()  # this request's constants leave the shared memory with it
        self.metrics.finished(result)
        self.metrics.request("ok")
        outputs = build_pipeline_response(result)
        return (pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()]),
                f"ok, {result.attempts} attempt(s)")

    def execute(self, requests):
        return respond_each(pb_utils, "rfad_pipeline", requests, self._handle, lambda: self.metrics.request("failed"))
