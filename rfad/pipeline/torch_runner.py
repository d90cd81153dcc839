"""The torch runner: the PyTorch modules, in process (``rfad generate``, trainers' evaluation)."""

from __future__ import annotations

import torch

from rfad.models.diffusion import DiffusionModels
from rfad.models.judge import JudgeModels
from rfad.pipeline.runner import ComponentRunner, RunnerInfo


class TorchRunner(ComponentRunner):
    """Runs :class:`DiffusionModels` (and optionally :class:`JudgeModels`) in process on ``device``.

    ``compile_mode``: run the ControlNet and the UNet, the two modules of every denoising step,
    through ``torch.compile`` with this mode (``"default"``, ``"reduce-overhead"``: CUDA graphs,
    ``"max-autotune"``); None runs them eagerly. The modules themselves are not changed (the
    compiled callables share their weights). The first call at each batch shape compiles
    (benchmarks/gpu_check.py's ``compile`` part records how long), so it pays only for long-lived
    runners; with ``"reduce-overhead"`` each batch shape also records its own CUDA graph.
    """

    def __init__(self, models: DiffusionModels, device: str | torch.device = "cpu", judge: JudgeModels | None = None,
                 compile_mode: str | None = None):
        self.models = models
        self.compile_mode = compile_mode
        self._controlnet, self._unet = models.controlnet, models.unet
        if compile_mode is not None:
            self._controlnet = torch.compile(models.controlnet, mode=compile_mode)
            self._unet = torch.compile(models.unet, mode=compile_mode)
        self.judge_models = judge
        self.device = torch.device(device)
        self.dtype = models.unet.dtype
        vae_config = models.vae.config
        self.scaling_factor = float(vae_config.scaling_factor)
        self.info = RunnerInfo(
            tokenizer=models.tokenizer,
            scheduler_config=dict(models.scheduler_config),
            unet_in_channels=int(models.unet.config.in_channels),
            latent_channels=int(vae_config.latent_channels),
            vae_scale_factor=2 ** (len(vae_config.block_out_channels) - 1),
            caption_tokenizer=judge.caption_tokenizer if judge is not None else None,
            judge_size=int(judge.rfnet.config.image_size) if judge is not None else None,
            screen_judge=judge is not None and judge.screen_rfnet is not None,
        )

    def text_encoder(self, input_ids):
        return self.models.text_encoder(input_ids.to(self.device))[0]

    def controlnet(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        down, mid = self._controlnet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=controlnet_cond,
            conditioning_scale=float(conditioning_scale), return_dict=False,
        )
        return list(down), mid

    def unet(self, sample, timestep, encoder_hidden_states, down_residuals, mid_residual):
        return self._unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=down_residuals, mid_block_additional_residual=mid_residual,
            return_dict=False,
        )[0]

    def vae_encoder(self, images):
        dist = self.models.vae.encode(images.to(self.device, self.dtype)).latent_dist
        return dist.mean * self.scaling_factor, dist.std * self.scaling_factor

    def vae_decoder(self, latents):
        return self.models.vae.decode(latents / self.scaling_factor, return_dict=False)[0]

    def _judge(self, component: str) -> JudgeModels:
        if self.judge_models is None:
            raise self._no_judge(component)
        return self.judge_models

    def depth(self, images):
        return self._judge("depth").depth(images)

    def saliency(self, images):
        return self._judge("saliency").saliency(images)

    def rfnet_text(self, input_ids, attention_mask):
        return self._judge("rfnet_text").rfnet.encode_caption(input_ids, attention_mask)

    def rfnet(self, product_image, generated_image, depth_map, saliency_map, caption_embeddings, caption_mask):
        logits = self._judge("rfnet").rfnet.judge(product_image, generated_image, depth_map, saliency_map,
                                                  caption_embeddings, caption_mask)
        return logits.softmax(dim=-1)

    def _screen(self, component: str) -> torch.nn.Module:
        if self.judge_models is None or self.judge_models.screen_rfnet is None:
            raise self._no_screen_judge(component)
        return self.judge_models.screen_rfnet

    def screen_rfnet_text(self, input_ids, attention_mask):
        return self._screen("screen_rfnet_text").encode_caption(input_ids, attention_mask)

    def screen_rfnet(self, product_image, generated_image, depth_map, saliency_map, caption_embeddings, caption_mask):
        logits = self._screen("screen_rfnet").judge(product_image, generated_image, depth_map, saliency_map,
                                                    caption_embeddings, caption_mask)
        return logits.softmax(dim=-1)
