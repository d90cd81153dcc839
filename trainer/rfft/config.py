"""The settings of ``rfad-train rfft`` (:class:`RFFTConfig`), their validation, and which of them a
resumed run must share with the run it continues."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rfad.canvas import CanvasSpec
from rfad.pipeline.settings import GenerationSettings

CONFIG_FILE = "rfft_config.json"
REGULARISERS = ("cc", "kl", "none")
SPLIT_CHOICES = ("train", "val", "test", "all")
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Settings a resumed run must share with the run it continues (anything else would change the
# trajectory); --steps may grow, checkpoint cadence and --max-steps may change.
TRAJECTORY_FIELDS = ("split", "batch_size", "grad_accum", "lr", "weight_decay", "max_grad_norm", "reg", "beta",
                     "ddim_steps", "last_k", "guidance", "controlnet_scale", "size", "product_scale", "upscale", "mask_dilation",
                     "negative_prompt", "mixed_precision", "grad_checkpointing", "seed")


@dataclass
class RFFTConfig:
    """Every flag of ``rfad-train rfft``.

    The generation defaults (DDIM steps, guidance, ControlNet scale, canvas side, product scale)
    are generation's own, read from :class:`GenerationSettings` and :class:`CanvasSpec`: the
    ControlNet is tuned on the images it will be served with (the paper's 40 steps, CFG 7.5,
    512 px). The RFFT-only defaults are the paper's: t* among the last 10 steps, batch 4 x
    accumulation 4, AdamW lr 1e-5; beta is not published.
    """

    models: str
    data: str
    out: str
    rfnet: str | None = None
    controlnet: str | None = None
    sd_config: str | None = None
    lora: str | None = None
    lora_scale: float | None = None
    depth: str | None = None
    saliency: str | None = None
    split: str = "train"  # "train" takes rows of split train AND unassigned rows (RFFT sets are often unsplit)
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 4
    lr: float = 1e-5
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0  # 0: no clipping (the norm is still logged)
    reg: str = "cc"
    beta: float = 1.0
    ddim_steps: int = GenerationSettings.steps
    last_k: int = 10
    guidance: float = GenerationSettings.guidance_scale
    controlnet_scale: float = GenerationSettings.controlnet_scale
    size: int = CanvasSpec.width  # the canvas is square: one side for width and height
    product_scale: float = CanvasSpec.product_scale
    upscale: bool = CanvasSpec.upscale  # enlarge small products to product_scale (the miniature world's canvas does)
    mask_dilation: int = CanvasSpec.mask_dilation
    negative_prompt: str = ""
    grad_checkpointing: bool = False
    mixed_precision: str = "no"
    checkpoint_steps: int = 0  # also checkpoint every K optimiser steps (0: only at the end)
    keep_checkpoints: int = 2
    max_steps: int = 0  # stop THIS invocation after N optimiser steps in total, with a checkpoint (0: run to --steps)
    resume: bool = False
    seed: int = 0

    def validated(self) -> "RFFTConfig":
        problems = []
        if self.reg not in REGULARISERS:
            problems.append(f"--reg {self.reg!r}: expected one of {', '.join(REGULARISERS)}")
        if self.split not in SPLIT_CHOICES:
            problems.append(f"--split {self.split!r}: expected one of {', '.join(SPLIT_CHOICES)}")
        if self.mixed_precision not in WEIGHT_DTYPES:
            problems.append(f"--mixed-precision {self.mixed_precision!r}: expected no, fp16 or bf16")
        for name in ("steps", "batch_size", "grad_accum", "ddim_steps", "last_k", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.last_k <= self.ddim_steps:
            problems.append(f"--last-k {self.last_k}: must be between 1 and --ddim-steps ({self.ddim_steps})")
        if self.guidance <= 1.0:
            # eps(0) is the CFG branch; without it there is neither guided eps~ nor L_CC.
            problems.append(f"--guidance {self.guidance}: RFFT needs classifier-free guidance (> 1)")
        if self.lr <= 0 or self.beta < 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            problems.append("--lr must be > 0 and --beta, --max-grad-norm, --weight-decay >= 0")
        if self.checkpoint_steps < 0 or self.max_steps < 0:
            problems.append("--checkpoint-steps and --max-steps must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        self.canvas_spec()  # raises ValueError naming the canvas field
        return self

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(steps=self.ddim_steps, guidance_scale=self.guidance,
                                  controlnet_scale=self.controlnet_scale, eta=0.0, seed=self.seed)

    def canvas_spec(self) -> CanvasSpec:
        return CanvasSpec(width=self.size, height=self.size, product_scale=self.product_scale, upscale=self.upscale,
                          mask_dilation=self.mask_dilation)
