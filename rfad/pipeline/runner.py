"""The runner interface: how the generation loop calls the models.

The loop (``rfad.pipeline.denoise`` / ``rfad.pipeline.generate``) is written once; a runner
supplies one method per component, named like the component specs and their tensors. The
torch runner calls PyTorch modules in process; the onnxruntime runner calls exported graphs;
the Triton runner makes BLS requests. All exchange CPU/GPU ``torch.Tensor`` values so that the
loop can use diffusers' scheduler unchanged.

``predict_noise`` is the one call per denoising step. Its default composes the ``controlnet``
and ``unet`` components; a runner that serves a merged ``controlnet_unet`` graph overrides it
and the residuals never leave the graph.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RunnerInfo:
    """What the loop must know about the models behind a runner.

    tokenizer: the CLIP tokenizer (``model_max_length`` tokens, 77 for SD-1.5): transformers' in
        the torch runner, a :class:`rfad.pipeline.tokens.SavedTokenizer` in those built from an
        export; :func:`rfad.pipeline.tokens.tokenize` takes either.
    scheduler_config: the base model's scheduler config (the loop builds DDIM from it).
    unet_in_channels: 4 (latent blending) or 9 (inpainting UNet: latents + mask + masked-image latents).
    latent_channels: 4 for SD-1.5.
    vae_scale_factor: 8 for SD-1.5.
    caption_tokenizer: RFNet's RoBERTa tokenizer (either kind, as ``tokenizer``), or None for a runner without judge models.
    judge_size: the side of the square images the judge components take (RFNet's image_size;
        rfad.pipeline.judge_view), or None for a runner without judge models.
    screen_judge: whether the runner has early screening's own RFNet (``screen_rfnet_text``,
        ``screen_rfnet``), beside the judge's.
    """

    tokenizer: object
    scheduler_config: dict
    unet_in_channels: int
    latent_channels: int = 4
    vae_scale_factor: int = 8
    caption_tokenizer: object | None = None
    judge_size: int | None = None
    screen_judge: bool = False


class ComponentRunner(abc.ABC):
    """Base class of runners. Subclasses implement the component methods; tensors on ``self.device``."""

    info: RunnerInfo
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @abc.abstractmethod
    def text_encoder(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids int64 [B, 77] -> text embeddings float [B, 77, D]."""

    @abc.abstractmethod
    def controlnet(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   controlnet_cond: torch.Tensor, conditioning_scale: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """sample [B, 4, h, w], timestep [B], encoder_hidden_states [B, 77, D], controlnet_cond [B, 3, H, W] in [0, 1]
        -> (down residuals, 12 tensors for SD-1.5; mid residual), already multiplied by ``conditioning_scale``."""

    @abc.abstractmethod
    def unet(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
             down_residuals: list[torch.Tensor], mid_residual: torch.Tensor) -> torch.Tensor:
        """sample [B, 4 or 9, h, w], timestep [B], encoder_hidden_states [B, 77, D], residuals -> noise [B, 4, h, w]."""

    @abc.abstractmethod
    def vae_encoder(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B, 3, H, W] in [-1, 1] -> (mean, std) of the latent distribution, each [B, 4, H/8, W/8],
        already multiplied by the VAE scaling factor (a latent sample is ``mean + std * noise``)."""

    @abc.abstractmethod
    def vae_decoder(self, latents: torch.Tensor) -> torch.Tensor:
        """scaled latents float [B, 4, h, w] -> images float [B, 3, 8h, 8w] in about [-1, 1]."""

    def predict_noise(self, sample: torch.Tensor, unet_extra: torch.Tensor | None, timestep: torch.Tensor,
                      encoder_hidden_states: torch.Tensor, controlnet_cond: torch.Tensor,
                      conditioning_scale: float) -> torch.Tensor:
        """One ControlNet + UNet evaluation.

        sample [B, 4, h, w] is what the ControlNet sees; ``unet_extra`` [B, 5, h, w] (mask and
        masked-image latents) is concatenated to it for a 9-channel inpainting UNet, else None.
        """
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale)
        unet_sample = sample if unet_extra is None else torch.cat([sample, unet_extra], dim=1)
        return self.unet(unet_sample, timestep, encoder_hidden_states, down, mid)

    # Judge components. Not abstract: a runner may serve generation without a judge, and then
    # says so when the loop asks for one.
    # The judge components take images at ``info.judge_size`` (S below); the torch runner's
    # modules accept any size, the exported graphs only S.
    def depth(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B, 3, S, S] in [0, 1] -> depth map float [B, 1, S, S] in [0, 1]."""
        raise self._no_judge("depth")

    def saliency(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B, 3, S, S] in [0, 1] -> saliency map float [B, 1, S, S] in [0, 1]."""
        raise self._no_judge("saliency")

    def rfnet_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """caption input_ids, attention_mask int64 [B, L] -> caption embeddings float [B, L, d]."""
        raise self._no_judge("rfnet_text")

    def rfnet(self, product_image: torch.Tensor, generated_image: torch.Tensor, depth_map: torch.Tensor,
              saliency_map: torch.Tensor, caption_embeddings: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] and maps [B, 1, S, S] in [0, 1], caption [B, L, d] + mask [B, L]
        -> class probabilities float [B, 5] (CLASS_NAMES order)."""
        raise self._no_judge("rfnet")

    # Early screening's own RFNet (optional), with the tensors of rfnet_text and rfnet.
    def screen_rfnet_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """As :meth:`rfnet_text`, with the screening RFNet's caption encoder."""
        raise self._no_screen_judge("screen_rfnet_text")

    def screen_rfnet(self, product_image: torch.Tensor, generated_image: torch.Tensor, depth_map: torch.Tensor,
                     saliency_map: torch.Tensor, caption_embeddings: torch.Tensor,
                     caption_mask: torch.Tensor) -> torch.Tensor:
        """As :meth:`rfnet`, with the screening RFNet (x0-previews in, class probabilities float [B, 5] out)."""
        raise self._no_screen_judge("screen_rfnet")

    def _no_screen_judge(self, component: str) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__} has no {component} model: give a screening RFNet "
                            "(the model set's screen_rfnet), or screen with the judge's RFNet")

    def _no_judge(self, component: str) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__} has no {component} model: give an RFNet, depth and saliency model")
