"""RFFT's losses at t* (steps 3-6 of :mod:`rfad.trainer.rfft.train`'s docstring) and the named
running sums the loop logs per optimiser step.

F_AC = -mean_i log p_i(Available) from RFNet on the image decoded from x0_hat; the regulariser
holds the student to the teacher (the frozen starting ControlNet) on the same x_t: ``cc``
(Consistent Condition, the paper's), ``kl`` (guided-eps distance) or ``none`` (ReFL).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

import torch

from rfad.pipeline.denoise import combine_guidance, guided_noise
from rfad.pipeline.judge_view import resize_tensor
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.trainer.rfft.micro_batch import MicroBatch

# The regulariser's name in logs, metrics and the output folder's rfft_config.json (none: not logged).
REG_LOG_NAMES = {"cc": "L_CC", "kl": "L_KL"}


@dataclass
class FeedbackLosses:
    """Scalar losses of one micro-step, and the intermediate tensors of the differentiable path
    (x0_hat [B,4,h,w], decoded/image [B,3,H,W], depth/saliency [B,1,S,S] at the judge's size S,
    logits [B,5]) for diagnostics."""

    f_ac: torch.Tensor
    reg: torch.Tensor
    p_available: torch.Tensor
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def feedback_losses(student: TorchRunner, teacher: TorchRunner | None, micro: MicroBatch, x_t: torch.Tensor,
                    step_index: int, settings: GenerationSettings, reg: str) -> FeedbackLosses:
    """Steps 3-6 of the training module's docstring at DDIM step ``step_index`` (t* = timesteps[step_index]).

    ``x_t`` float [B, 4, h, w] (no gradient); ``student`` runs the trainable ControlNet and the
    judge components, ``teacher`` the frozen starting ControlNet (unused with ``reg`` none).
    """
    batch = micro.denoising
    t = batch.timesteps[step_index]
    uncond, cond = guided_noise(student, batch, x_t, t, settings.controlnet_scale)
    eps = combine_guidance(uncond, cond, settings.guidance_scale)
    abar = batch.scheduler.alphas_cumprod[int(t)].to(device=x_t.device, dtype=torch.float32)
    x0_hat = (x_t.float() - (1 - abar).sqrt() * eps.float()) / abar.sqrt()
    decoded = student.vae_decoder(x0_hat.to(student.dtype))
    generated = (decoded.float() / 2 + 0.5).clamp(0, 1)  # as the pipeline's postprocessing (to_uint8) does
    # paste_back as a blend: exact product pixels where alpha is 1, differentiable elsewhere.
    image = generated * (1 - micro.product_alpha) + micro.product_rgb * micro.product_alpha
    # The judge sees what it sees when served: both images at its working size (differentiable resize).
    size = student.info.judge_size
    judged = resize_tensor(image, size)
    depth = student.depth(judged)
    saliency = student.saliency(judged)
    # Logits, not the runner's probabilities: log_softmax is the numerically stable route to log p.
    logits = student.judge_models.rfnet.judge(resize_tensor(micro.product_image, size), judged, depth, saliency,
                                              micro.caption_embeddings, micro.caption_mask)
    log_p_available = logits.float().log_softmax(dim=-1)[:, 0]
    f_ac = -log_p_available.mean()

    reg_loss = torch.zeros((), device=x_t.device)
    if reg != "none":
        with torch.no_grad():
            ref_uncond, ref_cond = guided_noise(teacher, batch, x_t, t, settings.controlnet_scale)
        if reg == "cc":
            # Consistent Condition: only the condition's contribution eps(c) - eps(0) is held to the teacher's.
            reg_loss = ((cond.float() - uncond.float()) - (ref_cond.float() - ref_uncond.float())).pow(2).mean()
        else:
            ref_eps = combine_guidance(ref_uncond, ref_cond, settings.guidance_scale)
            reg_loss = (eps.float() - ref_eps.float()).pow(2).mean()
    tensors = {"x0_hat": x0_hat, "decoded": decoded, "image": image, "depth": depth, "saliency": saliency,
               "logits": logits}
    return FeedbackLosses(f_ac=f_ac, reg=reg_loss, p_available=log_p_available.detach().exp().mean(), tensors=tensors)


@dataclass
class StepMetrics:
    """One optimiser step's logged scalars, float32 0-d tensors on the training device.

    ``f_ac``, ``reg`` and ``p_available`` are summed over the step's micro-steps; ``grad_norm``
    is the norm of the step's accumulated gradient (before clipping), set once when it is
    synchronised. They stay on the device (no host sync per micro-step) until :meth:`averaged`
    averages all four across processes in one all-reduce.
    """

    f_ac: torch.Tensor
    reg: torch.Tensor
    p_available: torch.Tensor
    grad_norm: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> "StepMetrics":
        return cls(**{f.name: torch.zeros((), device=device) for f in fields(cls)})

    def add(self, losses: FeedbackLosses) -> None:
        """Add one micro-step's losses to the sums."""
        self.f_ac += losses.f_ac.detach().float()
        self.reg += losses.reg.detach().float()
        self.p_available += losses.p_available.float()

    def averaged(self, micro_steps: int, reg: str,
                 mean_over_processes: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """{"F_AC", "p_available", "grad_norm"} and the regulariser under its :data:`REG_LOG_NAMES`
        name (absent for ``reg`` none): the per-micro-step means, averaged over every process by
        ``mean_over_processes`` (a float32 [4] tensor in, its mean across processes out)."""
        per_process = torch.stack([self.f_ac / micro_steps, self.reg / micro_steps,
                                   self.p_available / micro_steps, self.grad_norm])
        f_ac, reg_value, p_available, grad_norm = mean_over_processes(per_process).tolist()
        metrics = {"F_AC": f_ac, "p_available": p_available, "grad_norm": grad_norm}
        if reg in REG_LOG_NAMES:
            metrics[REG_LOG_NAMES[reg]] = reg_value
        return metrics
