"""The GPU check's duration, estimated from operation counts before any GPU has run it.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over the real architectures
built on the meta device at the plan's shape (no memory, no weights): one CFG ControlNet + UNet
evaluation per candidate, the VAE encoder and decoder per image, the text encoder per request,
the judge (depth, saliency, RFNet) per image, and one RFNet training sample. Each part's work
follows from the plan's counts of those operations:

- generation: per backend and K, (1 warm-up + ``attempt_repeats``) attempts of ``steps`` CFG
  evaluations at 2K rows, one VAE encoding, K decodings; plus ``step_calls`` + 1 evaluations;
- rfft: 2 optimiser steps (warm-up, timed) of ``rfft_accum`` micro-steps, each the mean DDIM
  prefix (t* uniform among the last ``rfft_last_k``: ``ddim - (last_k + 1) / 2`` steps) plus the
  step at t*: the student's evaluation 4 times (forward, recomputed forward under gradient
  checkpointing, backward at twice the forward), the teacher's once, the VAE decoder 4 times,
  the judge 3 times (forward and backward), per row;
- rfnet: (warm-up + timed) steps of 3x a forward (backward twice the forward) per sample;
- judge: (``judge_warmup`` + ``judge_repeats``) calls per batch.

Seconds are FLOPs over an achieved rate taken from the anchors, not from a guess about the
card: stable-fast runs SD-1.5 + ControlNet (compiled) at 72.6 it/s on an H100, i.e. 72.6 CFG
evaluations per second; eager PyTorch is ASSUMED to reach a third of that rate (its kernels are
the same, launch overhead and unfused normalisations are not). What is not compute is listed
with its source: the twin's build (measured on this project's 2-core machine:
``benchmarks/results/sd15_shape.json``), loading, start-up and compilation (assumptions).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

STABLE_FAST_CONTROLNET_IT_S = 72.6  # H100, SD-1.5 + ControlNet, 512 px, compiled (DESIGN.md section 8)
EAGER_FRACTION = 1 / 3  # ASSUMED share of the compiled anchor's rate that eager PyTorch reaches
STARTUP_S = 30.0  # ASSUMED: interpreter, torch + CUDA initialisation, imports, carried wheels installed
LOAD_BYTES_PER_S = 1.0e9  # ASSUMED: safetensors read (page cache after the build) and copied to the GPU
COMPILE_S_PER_MODULE_SHAPE = 90.0  # ASSUMED: inductor + CUDA graph capture per module and batch shape
TWIN_RESULT = Path(__file__).resolve().parent.parent / "results" / "sd15_shape.json"


def _count(function) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        function()
    return float(counter.get_total_flops())


def operation_flops(plan) -> dict[str, float]:
    """FLOPs of each counted operation at ``plan``'s shape (see the module docstring)."""
    from rfad.models.maps import DepthEstimator, SaliencyEstimator
    from rfad.models.rfnet import RFNet
    from rfad.models.u2net import U2Net
    from rfad.models.u2net_config import U2NetConfig
    from rfad.tiny.shapes import SHAPES
    from rfad.tiny.tokenizers import build_clip_tokenizer, build_roberta_tokenizer
    from rfad.tiny.zoo import tiny_controlnet, tiny_dpt, tiny_resnet, tiny_roberta, tiny_text_encoder, tiny_unet, tiny_vae

    shape = SHAPES[plan.shape]
    latent, width = plan.size // 8, shape.unet["cross_attention_dim"]
    with torch.device("meta"):
        unet = tiny_unet(4, 0, shape)
        controlnet = tiny_controlnet(unet, 0, shape)
        vae = tiny_vae(0, shape)
        text_encoder = tiny_text_encoder(build_clip_tokenizer(), 0, shape)
        rfnet_config = shape.rfnet()
        rfnet_config.resnet = tiny_resnet(0, shape).config.to_dict()
        rfnet_config.roberta = tiny_roberta(build_roberta_tokenizer(), 0, shape).config.to_dict()
        rfnet = RFNet(rfnet_config)
        depth = DepthEstimator(tiny_dpt(0, shape), size=shape.depth_size)
        saliency = SaliencyEstimator(U2Net(U2NetConfig(**shape.u2net)))
        x, t = torch.randn(2, 4, latent, latent), torch.full((2,), 500)
        text, control = torch.randn(2, 77, width), torch.rand(2, 3, plan.size, plan.size)

        def cfg_step():
            down, mid = controlnet(x, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
            unet(x, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                 mid_block_additional_residual=mid)

        judge_size, tokens = rfnet_config.image_size, rfnet_config.max_caption_tokens
        image, mask = torch.rand(1, 3, judge_size, judge_size), torch.ones(1, tokens, dtype=torch.long)
        single = torch.rand(1, 1, judge_size, judge_size)
        ids = torch.zeros(1, tokens, dtype=torch.long)
        caption = torch.randn(1, tokens, rfnet_config.width)
        rfnet_judge = _count(lambda: rfnet.judge(image, image, single, single, caption, mask))
        # RoBERTa without a mask: its mask check reads a value, which meta tensors do not have
        # (an all-ones mask changes no FLOP).
        roberta = _count(lambda: rfnet.text_encoder(input_ids=ids))
        return {
            "cfg_step_per_candidate": _count(cfg_step),
            "vae_encoder_per_image": _count(lambda: vae.encode(torch.rand(1, 3, plan.size, plan.size))),
            "vae_decoder_per_image": _count(lambda: vae.decode(torch.randn(1, 4, latent, latent))),
            "text_encoder_per_request": _count(lambda: text_encoder(torch.zeros(2, 77, dtype=torch.long))),
            "judge_per_image": _count(lambda: (depth(image), saliency(image))) + rfnet_judge,
            "rfnet_forward_per_sample": rfnet_judge + roberta,
        }


def part_flops(plan, ops: dict[str, float]) -> dict[str, float]:
    """FLOPs of each part of ``plan``'s run."""
    step, enc, dec = ops["cfg_step_per_candidate"], ops["vae_encoder_per_image"], ops["vae_decoder_per_image"]
    judge, text = ops["judge_per_image"], ops["text_encoder_per_request"]
    attempts = 1 + plan.attempt_repeats
    generation = sum(2 * attempts * (plan.steps * k * step + enc + k * dec + text) + (plan.step_calls + 1) * k * step
                     for k in plan.candidates)
    compiled = sum(attempts * (plan.steps * k * step + enc + k * dec + text) for k in plan.compile_candidates)
    prefix = plan.rfft_ddim_steps - (plan.rfft_last_k + 1) / 2
    micro = plan.rfft_batch * ((prefix + 4 + 1) * step + 4 * dec + 3 * judge + enc + text)
    return {
        "generation": generation,
        "judge": sum((plan.judge_warmup + plan.judge_repeats) * b * judge for b in plan.judge_batches),
        "rfft": 2 * plan.rfft_accum * micro,
        "rfnet": sum((plan.rfnet_warmup + plan.rfnet_steps) * b * 3 * ops["rfnet_forward_per_sample"]
                     for b in plan.rfnet_batches),
        "compile": compiled,
    }


def _twin_build_s() -> tuple[float, float]:
    """(seconds, bytes) of the SD-1.5 twin's build as measured on the project's CPU machine."""
    rows = json.loads(TWIN_RESULT.read_text())["rows"]
    zoo = next(row for row in rows if row.get("part") == "zoo")
    return float(zoo["wall_s"]), float(zoo["bytes"])


def estimate(plan) -> dict:
    """Per part: FLOPs, seconds of compute at the anchor-derived rate, seconds of the rest, total."""
    ops = operation_flops(plan)
    compiled_rate = STABLE_FAST_CONTROLNET_IT_S * ops["cfg_step_per_candidate"]  # FLOP/s of the anchor
    eager_rate = EAGER_FRACTION * compiled_rate
    # Only the SD-1.5 twin's build and load were measured; the tiny zoo's take seconds.
    build_s, zoo_bytes = _twin_build_s() if plan.shape == "sd15" else (0.0, 0.0)
    # Bytes each part loads: generation/judge the served set in fp16 (half the fp32 files),
    # rfft all of it, rfnet its own folder (a small share: counted with rfft's).
    other = {"twin": build_s, "generation": zoo_bytes / 2 / LOAD_BYTES_PER_S, "judge": 0.0,
             "rfft": zoo_bytes / LOAD_BYTES_PER_S, "rfnet": 0.0,
             "compile": zoo_bytes / 2 / LOAD_BYTES_PER_S + 2 * len(plan.compile_candidates) * COMPILE_S_PER_MODULE_SHAPE}
    flops = part_flops(plan, ops)
    parts = {}
    for name in ("twin", "generation", "judge", "rfft", "rfnet", "compile"):
        rate = compiled_rate if name == "compile" else eager_rate
        compute = flops.get(name, 0.0) / rate
        parts[name] = {"flops": flops.get(name, 0.0), "compute_s": compute, "other_s": other[name],
                       "seconds": compute + other[name]}
    total = STARTUP_S + sum(p["seconds"] for p in parts.values())
    return {"plan": plan.shape, "operations_flops": ops, "parts": parts, "startup_s": STARTUP_S, "total_s": total,
            "assumptions": {"anchor_it_s": STABLE_FAST_CONTROLNET_IT_S, "compiled_flop_per_s": compiled_rate,
                            "eager_fraction": EAGER_FRACTION, "eager_flop_per_s": eager_rate,
                            "load_bytes_per_s": LOAD_BYTES_PER_S, "compile_s_per_module_shape": COMPILE_S_PER_MODULE_SHAPE,
                            "twin_build_s_measured_on_cpu": build_s, "twin_bytes": zoo_bytes}}
