"""A component model (text encoder, ControlNet, UNet, VAE, depth, saliency, RFNet) as a Triton
python model running its ONNX graph with onnxruntime.

Used where Triton's own onnxruntime backend is not available (the local server of the
nvidia-pytriton wheel ships only the python backend). The graph is ``model.onnx`` beside this
file; input and output names come from the model config, which rfad-export writes from the
component spec. Requests batched by Triton's dynamic batcher are run as one onnxruntime call.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from rfad.onnx_session import open_session

        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.batched = config.get("max_batch_size", 0) > 0
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        graph = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        # The model is named after its component, whose memory options (rfad.onnx_session) apply.
        self.session = open_session(graph, parameters.get("precision", "fp32"), component=self.name)

    def execute(self, requests):
        try:
            arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
            sizes = [a[0].shape[0] for a in arrays]
            if self.batched and len(requests) > 1:
                feed = {name: np.concatenate([a[i] for a in arrays]) for i, name in enumerate(self.inputs)}
                results = self.session.run(self.outputs, feed)
                splits = np.cumsum(sizes)[:-1]
                per_request = [list(parts) for parts in zip(*[np.split(r, splits) for r in results])]
            else:
                per_request = [self.session.run(self.outputs, dict(zip(self.inputs, a, strict=True))) for a in arrays]
        except Exception as exc:  # one failing batch fails its requests, never the server
            error = pb_utils.TritonError(f"{self.name}: {type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(v))
                                                           for n, v in zip(self.outputs, outputs)])
                for outputs in per_request]
