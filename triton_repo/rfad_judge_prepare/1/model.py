"""rfad_judge_prepare: the first step of the rfad_judge ensemble (python).

Parse and check the request (rfad.serving.judge_io), decode the images, place the product as
the pipeline does, resize both to the judge's working size, tokenise the caption: the inputs
of depth, saliency, rfnet_text and rfnet.
A bad request is INVALID_ARGUMENT naming the field (and the image's index); the model never
raises out of execute(), so the server keeps serving.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from rfad.contract import JUDGE_INPUTS, InvalidRequest
from rfad.pipeline.tokens import SavedTokenizer, bound_bpe_cache
from rfad.serving.judge_io import declared_spec, judge_tensors, parse_judge_request
from rfad.serving.responses import error_response, respond_each


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.outputs = [o["name"] for o in config["output"]]
        # The judge's working size, from the config rfad-export wrote from the specs: the
        # generated images' dims are [-1, 3, S, S].
        self.size = int(next(o for o in config["output"] if o["name"] == "generated_image")["dims"][-1])
        assets = Path(args["model_repository"]) / args["model_version"] / "assets"
        # Captions carry product codes, new words the tokenizer would cache without end (tokens.py).
        # The tokenizers library alone: transformers would import torch into this step (tokens.py).
        self.tokenizer = bound_bpe_cache(SavedTokenizer(assets / "caption_tokenizer"))
        self.spec = declared_spec(assets)  # the product is placed as the repository's pipeline places it

    def _handle(self, request):
        inputs = {}
        for field in JUDGE_INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, field.name)
            inputs[field.name] = None if tensor is None else tensor.as_numpy()
        try:
            tensors = judge_tensors(parse_judge_request(inputs), self.tokenizer, self.size, self.spec)
        except InvalidRequest as exc:
            return error_response(pb_utils, str(exc), pb_utils.TritonError.INVALID_ARG)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, tensors[name]) for name in self.outputs])

    def execute(self, requests):
        return respond_each(pb_utils, "rfad_judge_prepare", requests, self._handle)
