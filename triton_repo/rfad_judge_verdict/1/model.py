"""rfad_judge_verdict: the last step of the rfad_judge ensemble (python): p(Available) >= threshold.

The threshold is the request's optional ``threshold`` input (checked by rfad_judge_prepare,
which sees the same request) or the contract's default.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from rfad.contract import JUDGE_THRESHOLD
from rfad.serving.judge_io import verdicts


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                probabilities = pb_utils.get_input_tensor_by_name(request, "probabilities").as_numpy()
                threshold_tensor = pb_utils.get_input_tensor_by_name(request, "threshold")
                threshold = JUDGE_THRESHOLD if threshold_tensor is None else float(threshold_tensor.as_numpy().reshape(-1)[0])
                if not np.isfinite(probabilities).all():
                    raise ValueError("rfnet returned non-finite probabilities")
                available = verdicts(probabilities, threshold)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("available", available)]))
            except Exception as exc:  # a bug must fail one request, never the server
                error = pb_utils.TritonError(f"rfad_judge_verdict: {type(exc).__name__}: {exc}",
                                             pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
