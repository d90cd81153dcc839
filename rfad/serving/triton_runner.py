"""The Triton runner: the loop's components as BLS requests to the repository's component models.

Runs inside the ``rfad_pipeline`` python-backend model (``triton_python_backend_utils`` is only
importable there). Each runner method sends one ``InferenceRequest`` to the component model of
the same name with the component's tensor names, checks THAT response's error (a failed
component fails the request with the component named), and returns torch tensors so the one
loop of ``rfad.pipeline`` runs unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rfad.pipeline.runner import ComponentRunner, RunnerInfo


class ComponentError(RuntimeError):
    """A component model returned an error (or non-finite values); the message names the component."""


def _numpy(tensor: torch.Tensor | np.ndarray, dtype=np.float32) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().numpy()
    return np.ascontiguousarray(tensor, dtype=dtype)


class TritonRunner(ComponentRunner):
    """BLS calls to the component models named in ``assets/runner.json`` of the pipeline model.

    ``assets`` is the folder ``rfad-export triton-repo`` writes beside the pipeline model:
    ``runner.json`` (RunnerInfo facts, scheduler config, ControlNet residual count, which
    components exist) and the tokenizers.
    """

    def __init__(self, assets: str | Path, pb_utils, merged: bool | None = None):
        from transformers import AutoTokenizer, CLIPTokenizer

        assets = Path(assets)
        facts = json.loads((assets / "runner.json").read_text())
        self.pb_utils = pb_utils
        self.residuals = int(facts["controlnet_residuals"])
        self.components = set(facts["components"])
        self.merged = ("controlnet_unet" in self.components) if merged is None else merged
        caption_tokenizer = None
        if (assets / "caption_tokenizer").is_dir():
            caption_tokenizer = AutoTokenizer.from_pretrained(assets / "caption_tokenizer", local_files_only=True)
        self.info = RunnerInfo(
            tokenizer=CLIPTokenizer.from_pretrained(assets / "tokenizer", local_files_only=True),
            scheduler_config=facts["scheduler_config"],
            unet_in_channels=int(facts["unet_in_channels"]),
            latent_channels=int(facts["latent_channels"]),
            vae_scale_factor=int(facts["vae_scale_factor"]),
            caption_tokenizer=caption_tokenizer,
        )
        self.calls = 0  # BLS requests made (benchmarks divide serving overhead by this)

    def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[torch.Tensor]:
        pb = self.pb_utils
        # Per-sample scalars ([B]) are declared as dims [1] with a reshape: callers send [B, 1].
        tensors = [pb.Tensor(name, value.reshape(-1, 1) if value.ndim == 1 else value) for name, value in inputs.items()]
        request = pb.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=tensors)
        response = request.exec()
        self.calls += 1
        if response.has_error():
            raise ComponentError(f"component {model!r} failed: {response.error().message()}")
        results = []
        for name in outputs:
            array = pb.get_output_tensor_by_name(response, name).as_numpy()
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                raise ComponentError(f"component {model!r} returned non-finite values in {name!r}")
            results.append(torch.from_numpy(np.array(array)))
        return results

    # --- generation components --------------------------------------------------------------

    def text_encoder(self, input_ids):
        return self._infer("text_encoder", {"input_ids": _numpy(input_ids, np.int64)}, ["text_embeddings"])[0]

    def controlnet(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        batch = sample.shape[0]
        names = [f"down_res_{i}" for i in range(self.residuals)] + ["mid_res"]
        out = self._infer("controlnet", {
            "sample": _numpy(sample), "timestep": _numpy(timestep), "encoder_hidden_states": _numpy(encoder_hidden_states),
            "controlnet_cond": _numpy(controlnet_cond),
            "conditioning_scale": np.full((batch,), conditioning_scale, dtype=np.float32),
        }, names)
        return out[:-1], out[-1]

    def unet(self, sample, timestep, encoder_hidden_states, down_residuals, mid_residual):
        inputs = {"sample": _numpy(sample), "timestep": _numpy(timestep),
                  "encoder_hidden_states": _numpy(encoder_hidden_states)}
        inputs.update({f"down_res_{i}": _numpy(r) for i, r in enumerate(down_residuals)})
        inputs["mid_res"] = _numpy(mid_residual)
        return self._infer("unet", inputs, ["noise_pred"])[0]

    def predict_noise(self, sample, unet_extra, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        if not self.merged:
            return super().predict_noise(sample, unet_extra, timestep, encoder_hidden_states, controlnet_cond,
                                         conditioning_scale)
        # One request per step: the residuals (54 MB per step at 512 px in fp32 with CFG) stay
        # inside the merged graph instead of crossing the BLS boundary twice.
        inputs = {"sample": _numpy(sample), "timestep": _numpy(timestep),
                  "encoder_hidden_states": _numpy(encoder_hidden_states), "controlnet_cond": _numpy(controlnet_cond),
                  "conditioning_scale": np.full((sample.shape[0],), conditioning_scale, dtype=np.float32)}
        if unet_extra is not None:
            inputs["unet_extra"] = _numpy(unet_extra)
        return self._infer("controlnet_unet", inputs, ["noise_pred"])[0]

    def vae_encoder(self, images):
        mean, std = self._infer("vae_encoder", {"images": _numpy(images)}, ["latent_mean", "latent_std"])
        return mean, std

    def vae_decoder(self, latents):
        return self._infer("vae_decoder", {"latents": _numpy(latents)}, ["images"])[0]

    # --- judge components -------------------------------------------------------------------

    def depth(self, images):
        return self._infer("depth", {"images": _numpy(images)}, ["depth_map"])[0]

    def saliency(self, images):
        return self._infer("saliency", {"images": _numpy(images)}, ["saliency_map"])[0]

    def rfnet_text(self, input_ids, attention_mask):
        return self._infer("rfnet_text", {"input_ids": _numpy(input_ids, np.int64),
                                          "attention_mask": _numpy(attention_mask, np.int64)},
                           ["caption_embeddings"])[0]

    def rfnet(self, product_image, generated_image, depth_map, saliency_map, caption_embeddings, caption_mask):
        return self._infer("rfnet", {
            "product_image": _numpy(product_image), "generated_image": _numpy(generated_image),
            "depth_map": _numpy(depth_map), "saliency_map": _numpy(saliency_map),
            "caption_embeddings": _numpy(caption_embeddings), "caption_mask": _numpy(caption_mask, np.int64),
        }, ["probabilities"])[0]


class EnsembleJudge:
    """The pipeline's judge as one BLS call per attempt to the ``rfad_judge`` ensemble.

    The ``Judge`` of :func:`rfad.pipeline.generate.generate`, built per request with the
    request's encoded product image: the ensemble places the product and encodes the caption
    itself, as :class:`rfad.pipeline.judge.RunnerJudge` does over the separate components
    (which encodes the caption once per request instead of once per attempt).
    """

    def __init__(self, pb_utils, product_image: bytes):
        self.pb_utils = pb_utils
        self.product_image = product_image
        self.calls = 0

    def prepare(self, canvas, caption: str) -> str:
        return caption

    def __call__(self, images: np.ndarray, caption: str) -> np.ndarray:
        """uint8 [N, H, W, 3] -> class probabilities float [N, 5]."""
        from rfad.contract import JUDGE_MODEL, JUDGE_OUTPUTS
        from rfad.serving.pipeline_io import encode_png

        pb = self.pb_utils
        tensors = [
            # Stored PNGs: the bytes only cross the server's shared memory to rfad_judge_prepare,
            # so deflating every candidate of every attempt would be time spent for nothing.
            pb.Tensor("generated_image", np.array([encode_png(image, compress_level=0) for image in images],
                                                  dtype=np.object_)),
            pb.Tensor("product_image", np.array([self.product_image], dtype=np.object_)),
            pb.Tensor("caption", np.array([caption.encode("utf-8")], dtype=np.object_)),
        ]
        # Both outputs: asked for probabilities alone, Triton 2.51's ensemble scheduler reports
        # "unexpected deadlock" (the verdict step's output has no taker).
        request = pb.InferenceRequest(model_name=JUDGE_MODEL, requested_output_names=[f.name for f in JUDGE_OUTPUTS],
                                      inputs=tensors)
        response = request.exec()
        self.calls += 1
        if response.has_error():
            raise ComponentError(f"component {JUDGE_MODEL!r} failed: {response.error().message()}")
        probabilities = pb.get_output_tensor_by_name(response, "probabilities").as_numpy()
        if not np.isfinite(probabilities).all():
            raise ComponentError(f"component {JUDGE_MODEL!r} returned non-finite values in 'probabilities'")
        return np.array(probabilities)
