"""Every runner's component calls, built from the component specs.

The torch runner (the PyTorch modules in process), the onnxruntime runner (exported graphs in
process) and the Triton runner (BLS requests) differ only in how one component call is executed
(:meth:`SpecRunner._execute`: the torch runner calls the component's module, the onnxruntime
runner hands onnxruntime numpy arrays, the Triton runner hands Triton torch tensors by DLPack).
Everything else is here: values are passed by role, paired with the spec's tensors (names and
dtypes) strictly, and the outputs come back by role, so a tensor renamed in a spec is followed
without a code change.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np
import torch

from rfad.components.manifest import ExportManifest
from rfad.components.registry import COMPONENTS
from rfad.components.specs import ComponentSpec, TensorSpec
from rfad.pipeline.runner import ComponentRunner, RunnerInfo


def as_numpy(value, dtype: str) -> np.ndarray:
    """A torch tensor or array -> a C-contiguous numpy array of ``dtype`` (copied only where needed)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.dtype(dtype))


class SpecRunner(ComponentRunner):
    """Base of the runners: one call per component, built from its spec (the specs in :attr:`specs`).

    ``merged``: each denoising step is one call of ``controlnet_unet`` instead of ``controlnet``
    then ``unet``. :attr:`calls` counts component calls (benchmarks divide overheads by it).
    """

    specs: dict[str, ComponentSpec]
    merged: bool = False
    calls: int = 0

    def _load(self, folder: Path, manifest: ExportManifest, merged: bool) -> None:
        """Specs and RunnerInfo of ``manifest``, the tokenizers from ``folder`` (``tokenizer/``, ``caption_tokenizer/``)."""
        from rfad.pipeline.tokens import SavedTokenizer, bound_bpe_cache

        self.specs = manifest.specs
        if merged and "controlnet_unet" not in self.specs:
            raise ValueError(f"{folder}: merged=True needs the controlnet_unet component")
        self.merged = merged
        caption = folder / "caption_tokenizer"
        self.info = RunnerInfo(
            tokenizer=bound_bpe_cache(SavedTokenizer(folder / "tokenizer")),
            scheduler_config=manifest.scheduler_config,
            unet_in_channels=manifest.facts.unet_in_channels, latent_channels=manifest.facts.latent_channels,
            vae_scale_factor=int(manifest.vae_scale_factor),
            caption_tokenizer=bound_bpe_cache(SavedTokenizer(caption)) if caption.is_dir() else None,
            judge_size=manifest.facts.judge_size if "rfnet" in self.specs else None,
            screen_judge="screen_rfnet" in self.specs,
        )

    @abc.abstractmethod
    def _execute(self, spec: ComponentSpec, feed: list[tuple[TensorSpec, object]]) -> list[torch.Tensor]:
        """Run component ``spec.name`` on ``feed`` (its inputs in spec order, each value as the loop
        passed it: a torch tensor of any dtype, contiguous or not, or a numpy array) -> its outputs,
        in spec order, as torch tensors the caller may keep."""

    def _call(self, component: str, **values) -> dict:
        """One call of ``component`` with its inputs by role -> its outputs by role (torch tensors)."""
        spec = self.specs.get(component)
        if spec is None:
            if COMPONENTS[component].group == "judge":
                raise self._no_judge(component)
            if COMPONENTS[component].group == "screen":
                raise self._no_screen_judge(component)
            raise RuntimeError(f"{type(self).__name__} has no {component} component: export it with `rfad-export onnx`")
        feed = spec.bind(values)
        self.calls += 1
        return spec.unbind(self._execute(spec, feed))

    @staticmethod
    def _per_sample(sample: torch.Tensor, scale: float) -> np.ndarray:
        return np.full((sample.shape[0],), scale, dtype=np.float32)

    def text_encoder(self, input_ids):
        return self._call("text_encoder", input_ids=input_ids)["text_embeddings"]

    def controlnet(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        out = self._call("controlnet", sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                         controlnet_cond=controlnet_cond, conditioning_scale=self._per_sample(sample, conditioning_scale))
        return out["down_res"], out["mid_res"]

    def unet(self, sample, timestep, encoder_hidden_states, down_residuals, mid_residual):
        return self._call("unet", sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                          down_res=list(down_residuals), mid_res=mid_residual)["noise_pred"]

    def predict_noise(self, sample, unet_extra, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        if not self.merged:
            return super().predict_noise(sample, unet_extra, timestep, encoder_hidden_states, controlnet_cond,
                                         conditioning_scale)
        # One call per step: the residuals (54 MB per step at 512 px in fp32 with CFG) stay
        # inside the merged graph instead of crossing the runtime boundary twice.
        extra = {} if unet_extra is None else {"unet_extra": unet_extra}
        return self._call("controlnet_unet", sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                          controlnet_cond=controlnet_cond, conditioning_scale=self._per_sample(sample, conditioning_scale),
                          **extra)["noise_pred"]

    def vae_encoder(self, images):
        out = self._call("vae_encoder", images=images)
        return out["latent_mean"], out["latent_std"]

    def vae_decoder(self, latents):
        return self._call("vae_decoder", latents=latents)["images"]

    def depth(self, images):
        return self._call("depth", images=images)["depth_map"]

    def saliency(self, images):
        return self._call("saliency", images=images)["saliency_map"]

    def rfnet_text(self, input_ids, attention_mask):
        return self._call("rfnet_text", input_ids=input_ids, attention_mask=attention_mask)["caption_embeddings"]

    def rfnet(self, product_image, generated_image, depth_map, saliency_map, caption_embeddings, caption_mask):
        return self._call("rfnet", product_image=product_image, generated_image=generated_image, depth_map=depth_map,
                          saliency_map=saliency_map, caption_embeddings=caption_embeddings,
                          caption_mask=caption_mask)["probabilities"]

    def screen_rfnet_text(self, input_ids, attention_mask):
        return self._call("screen_rfnet_text", input_ids=input_ids,
                          attention_mask=attention_mask)["caption_embeddings"]

    def screen_rfnet(self, product_image, generated_image, depth_map, saliency_map, caption_embeddings, caption_mask):
        return self._call("screen_rfnet", product_image=product_image, generated_image=generated_image,
                          depth_map=depth_map, saliency_map=saliency_map, caption_embeddings=caption_embeddings,
                          caption_mask=caption_mask)["probabilities"]
