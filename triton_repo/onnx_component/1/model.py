"""A component model (text encoder, ControlNet, UNet, VAE, depth, saliency, RFNet) as a Triton
python model running its ONNX graph with onnxruntime.

Used where Triton's own onnxruntime backend is not available (the local server of the
nvidia-pytriton wheel ships only the python backend). The graph is ``model.onnx`` beside this
file; input and output names come from the model config, which rfad-export writes from the
component spec. Requests batched by Triton's dynamic batcher are run as one onnxruntime call.

Tensors enter and leave onnxruntime by DLPack (``OrtValue.from_dlpack`` of the request's
tensors, ``pb_utils.Tensor.from_dlpack`` of onnxruntime's outputs, bound to the instance's
device): no numpy conversion, and on a GPU instance (CUDA execution provider, the config's
``FORCE_CPU_ONLY_INPUT_TENSORS`` = no) the tensors stay on the GPU. Batches of several requests
are concatenated on the host, so a GPU instance runs its requests one by one.

onnxruntime's threads are the config's (``intra_op_threads``, ``spinning``; rfad-export writes
them, :data:`rfad.onnx_session.COMPONENT_THREADS`), not onnxruntime's defaults.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from rfad.onnx_session import ThreadSettings, open_session

        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.batched = config.get("max_batch_size", 0) > 0
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = ThreadSettings.from_parameters(parameters)
        graph = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.gpu = args["model_instance_kind"] == "GPU"
        self.device_id = int(args["model_instance_device_id"]) if self.gpu else 0
        providers = None
        if self.gpu:
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError(f"{self.name}: a KIND_GPU instance needs onnxruntime's CUDA execution provider "
                                   "(install onnxruntime-gpu), or write the repository with --kind KIND_CPU")
            providers = [("CUDAExecutionProvider", {"device_id": self.device_id})]
        # The model is named after its component, whose memory options (rfad.onnx_session) apply on CPU.
        if "precision" not in parameters:
            raise RuntimeError(f"{self.name}: config.pbtxt has no 'precision' parameter: write the repository with "
                               "`rfad-export triton-repo`")
        self.session = open_session(graph, parameters["precision"], providers, component=self.name, threads=threads)

    def _run(self, feed: dict) -> list:
        """OrtValues by input name -> the outputs as OrtValues on this instance's device."""
        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.outputs:
            binding.bind_output(name, "cuda" if self.gpu else "cpu", self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()

    def _respond(self, outputs: list) -> "pb_utils.InferenceResponse":
        # OrtValue's C object speaks DLPack; the response copies it into the shared memory.
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack(name, value._ortvalue)
                                                         for name, value in zip(self.outputs, outputs, strict=True)])

    def _run_batch(self, requests) -> list:
        """Several requests as one onnxruntime call (host memory): one response per request."""
        arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
        feed = {name: onnxruntime.OrtValue.ortvalue_from_numpy(np.concatenate([a[i] for a in arrays]))
                for i, name in enumerate(self.inputs)}
        splits = np.cumsum([a[0].shape[0] for a in arrays])[:-1]
        parts = zip(*[np.split(value.numpy(), splits) for value in self._run(feed)])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(v))
                                                           for n, v in zip(self.outputs, outputs)])
                for outputs in parts]

    def execute(self, requests):
        try:
            if self.batched and len(requests) > 1 and not self.gpu:
                return self._run_batch(requests)
            return [self._respond(self._run({name: onnxruntime.OrtValue.from_dlpack(
                        pb_utils.get_input_tensor_by_name(request, name)) for name in self.inputs}))
                    for request in requests]
        except Exception as exc:  # one failing batch fails its requests, never the server
            error = pb_utils.TritonError(f"{self.name}: {type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
