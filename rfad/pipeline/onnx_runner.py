"""The onnxruntime runner: the exported graphs, in process (parity checks, benchmarks, CPU serving).

Reads an ``rfad-export onnx`` folder: ``manifest.json`` (facts, specs, scheduler), the
tokenizers and one graph per component. Tensor names come from the specs in the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rfad.components.specs import ModelFacts
from rfad.onnx_session import open_session
from rfad.pipeline.runner import ComponentRunner, RunnerInfo


def _np(tensor, dtype=np.float32) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().numpy()
    return np.ascontiguousarray(tensor, dtype=dtype)


class OnnxRunner(ComponentRunner):
    """``merged=True`` uses the ``controlnet_unet`` graph for each step (one call instead of two)."""

    def __init__(self, onnx_dir: str | Path, merged: bool = False, providers: list[str] | None = None):
        import onnxruntime
        from transformers import AutoTokenizer, CLIPTokenizer

        folder = Path(onnx_dir)
        manifest_file = folder / "manifest.json"
        if not manifest_file.is_file():
            raise FileNotFoundError(f"ONNX folder {folder}: no manifest.json (write it with `rfad-export onnx`)")
        manifest = json.loads(manifest_file.read_text())
        self.facts = ModelFacts.from_dict(manifest["facts"])
        self.specs = {name: entry["spec"] for name, entry in manifest["components"].items()}
        onnxruntime.set_default_logger_severity(3)
        self.precision = manifest.get("precision", "fp32")
        self.sessions = {}
        for name, entry in manifest["components"].items():
            graph = folder / entry["file"]
            if not graph.is_file():
                raise FileNotFoundError(f"ONNX folder {folder}: {entry['file']} is missing")
            try:
                self.sessions[name] = open_session(graph, self.precision, providers)
            except Exception as exc:  # onnxruntime raises its own types for corrupt files
                raise ValueError(f"ONNX folder {folder}: {entry['file']} cannot be loaded: {exc}") from exc
        if merged and "controlnet_unet" not in self.sessions:
            raise ValueError(f"ONNX folder {folder}: merged=True needs the controlnet_unet graph")
        self.merged = merged
        caption = folder / "caption_tokenizer"
        self.info = RunnerInfo(
            tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
            scheduler_config=manifest["scheduler_config"],
            unet_in_channels=self.facts.unet_in_channels, latent_channels=self.facts.latent_channels,
            vae_scale_factor=int(manifest["vae_scale_factor"]),
            caption_tokenizer=AutoTokenizer.from_pretrained(caption, local_files_only=True) if caption.is_dir() else None,
        )

    def _run(self, component: str, *values) -> list[torch.Tensor]:
        if component not in self.sessions:
            raise self._no_judge(component)
        spec = self.specs[component]
        feed = {t["name"]: _np(v, np.dtype(t["dtype"])) for t, v in zip(spec["inputs"], values)}
        return [torch.from_numpy(out) for out in self.sessions[component].run(None, feed)]

    def _scale(self, sample, scale) -> np.ndarray:
        return np.full((sample.shape[0],), scale, dtype=np.float32)

    def text_encoder(self, input_ids):
        return self._run("text_encoder", input_ids)[0]

    def controlnet(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        out = self._run("controlnet", sample, timestep, encoder_hidden_states, controlnet_cond,
                        self._scale(sample, conditioning_scale))
        return out[:-1], out[-1]

    def unet(self, sample, timestep, encoder_hidden_states, down_residuals, mid_residual):
        return self._run("unet", sample, timestep, encoder_hidden_states, *down_residuals, mid_residual)[0]

    def predict_noise(self, sample, unet_extra, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        if not self.merged:
            return super().predict_noise(sample, unet_extra, timestep, encoder_hidden_states, controlnet_cond,
                                         conditioning_scale)
        extra = () if unet_extra is None else (unet_extra,)
        return self._run("controlnet_unet", sample, *extra, timestep, encoder_hidden_states, controlnet_cond,
                         self._scale(sample, conditioning_scale))[0]

    def vae_encoder(self, images):
        mean, std = self._run("vae_encoder", images)
        return mean, std

    def vae_decoder(self, latents):
        return self._run("vae_decoder", latents)[0]

    def depth(self, images):
        return self._run("depth", images)[0]

    def saliency(self, images):
        return self._run("saliency", images)[0]

    def rfnet_text(self, input_ids, attention_mask):
        return self._run("rfnet_text", input_ids, attention_mask)[0]

    def rfnet(self, product_image, generated_image, depth_map, saliency_map, caption_embeddings, caption_mask):
        return self._run("rfnet", product_image, generated_image, depth_map, saliency_map, caption_embeddings,
                         caption_mask)[0]
