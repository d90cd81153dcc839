"""rfad_judge_verdict: the last step of the rfad_judge ensemble (python): p(Available) >= threshold.

The threshold is the request's optional ``threshold`` input (checked by rfad_judge_prepare,
which sees the same request) or the contract's default.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from rfad.contract import JUDGE_THRESHOLD
from rfad.serving.judge_io import verdicts
from rfad.serving.responses import error_response, respond_each


class TritonPythonModel:
    def _handle(self, request):
        probabilities = pb_utils.get_input_tensor_by_name(request, "probabilities").as_numpy()
        threshold_tensor = pb_utils.get_input_tensor_by_name(request, "threshold")
        threshold = JUDGE_THRESHOLD if threshold_tensor is None else float(threshold_tensor.as_numpy().reshape(-1)[0])
        if not np.isfinite(probabilities).all():
            return error_response(pb_utils, "rfad_judge: rfnet returned non-finite probabilities",
                                  pb_utils.TritonError.INTERNAL)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("available", verdicts(probabilities, threshold))])

    def execute(self, requests):
        return respond_each(pb_utils, "rfad_judge_verdict", requests, self._handle)
