"""rfad_judge_verdict: the last step of the rfad_judge ensemble (python): p(Available) >= threshold.

It reads the ensemble's intermediates as well as the probabilities: the config's ``checks``
parameter lists ``component:tensor`` pairs, upstream first, and the first tensor holding a
non-finite value fails the request naming that component (a NaN from depth would otherwise
surface only as non-finite probabilities from rfnet). The threshold is the request's optional
``threshold`` input (checked by rfad_judge_prepare, which sees the same request) or the
contract's default.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from rfad.contract import JUDGE_INPUTS, JUDGE_OUTPUTS, JUDGE_THRESHOLD
from rfad.serving.judge_io import verdicts
from rfad.serving.responses import error_response, respond_each


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        pairs = parameters["checks"]["string_value"]  # written by rfad-export triton-repo
        self.checks = [tuple(pair.split(":", 1)) for pair in pairs.split(",")]

    def _handle(self, request):
        for component, name in self.checks:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None and not np.isfinite(tensor.as_numpy()).all():
                return error_response(pb_utils, f"component {component!r} returned non-finite values in {name!r}",
                                      pb_utils.TritonError.INTERNAL)
        # The ensemble's own tensors, named by the judge contract.
        probabilities = pb_utils.get_input_tensor_by_name(request, JUDGE_OUTPUTS.probabilities.name).as_numpy()
        threshold_tensor = pb_utils.get_input_tensor_by_name(request, JUDGE_INPUTS.threshold.name)
        threshold = JUDGE_THRESHOLD if threshold_tensor is None else float(threshold_tensor.as_numpy().reshape(-1)[0])
        available = pb_utils.Tensor(JUDGE_OUTPUTS.available.name, verdicts(probabilities, threshold))
        return pb_utils.InferenceResponse(output_tensors=[available])

    def execute(self, requests):
        return respond_each(pb_utils, "rfad_judge_verdict", requests, self._handle)
