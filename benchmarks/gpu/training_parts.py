"""The GPU check's training parts: one RFFT optimiser step and RFNet training steps.

RFFT runs the trainer's own functions in the trainer's order (``rfad.trainer.rfft.train``: models
loaded by ``load_rfft_models`` with the frozen ones cast to bf16 on a GPU, gradient checkpointing
on the ControlNet, UNet and VAE, then per micro-step ``micro_step_randomness`` ->
``prepare_micro_batch`` -> ``denoise_steps`` to t* -> ``feedback_losses`` under bf16 autocast
(on a GPU; float32 on the CPU, where bf16 autocast is about 30x slower) -> backward; after
``rfft_accum`` micro-steps the clipped AdamW step). What it leaves out is accelerate's wrapping (single process, no DDP; accelerate's bf16 autocast is
this ``torch.autocast``, and its float32 cast of the ControlNets' outputs changes no cost that
matters here). The first optimiser step (it allocates AdamW's state) is the warm-up; the second
is timed, micro-step by micro-step, with its peak memory and whether it fits the card.

RFNet trains on random tensors of the right shapes (the loader is left out: its cost is JPEG
decoding, not the GPU), forward under bf16 autocast (on a GPU), cross-entropy in float32, AdamW, as
``rfad-train rfnet`` does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from measure import Meter


def _rfft_config(zoo: Path, plan, work: Path, precision: str):
    from rfad.trainer.api import RFFTConfig, write_synthetic_dataset

    data = work / f"rfft-data-{plan.rfft_size}"
    if not (data / "manifest.jsonl").is_file():
        write_synthetic_dataset(data, plan.rfft_rows, seed=0, size=max(64, plan.rfft_size // 2))
    return RFFTConfig(models=str(zoo), data=str(data), out=str(work / "rfft-out"), size=plan.rfft_size,
                      batch_size=plan.rfft_batch, grad_accum=plan.rfft_accum, ddim_steps=plan.rfft_ddim_steps,
                      last_k=plan.rfft_last_k, split="all", grad_checkpointing=True,
                      mixed_precision=precision).validated()


def bench_rfft(zoo: Path, plan, meter: Meter, device: torch.device, work: Path, precision: str = "bf16") -> list[dict]:
    """One timed optimiser step (after one warm-up step) under ``precision`` (bf16 autocast or no);
    one row, then a row per micro-step."""
    from rfad.pipeline.denoise import denoise_steps
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.trainer.api import (
        WEIGHT_DTYPES,
        feedback_losses,
        load_rfft_models,
        load_rows,
        micro_batch_rows,
        micro_step_randomness,
        prepare_micro_batch,
    )

    config = _rfft_config(zoo, plan, work, precision)
    spec, settings = config.canvas_spec(), config.generation_settings()
    rows, root = load_rows(config.data, config.split, spec, echo=lambda *_: None)
    meter.reset_peak()
    models = load_rfft_models(config, device, WEIGHT_DTYPES[config.mixed_precision])
    for module in (models.diffusion.controlnet, models.diffusion.unet, models.diffusion.vae):
        module.enable_gradient_checkpointing()
    weights_bytes = meter.allocated()
    student = models.diffusion.controlnet
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    runner = TorchRunner(models.diffusion, device, judge=models.judge)
    teacher = TorchRunner(dataclasses.replace(models.diffusion, controlnet=models.teacher), device)
    micro_rows: list[dict] = []

    def micro_step(step: int, micro: int) -> dict:
        step_index, seeds = micro_step_randomness(config.seed, step, micro, 0, config.batch_size,
                                                  config.ddim_steps, config.last_k)
        indices = micro_batch_rows(len(rows), config.seed, step * config.grad_accum + micro, 0, 1, config.batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"):
            batch = prepare_micro_batch(runner, [rows[i] for i in indices], root, spec, settings, seeds,
                                        config.negative_prompt)
            x_t = denoise_steps(runner, batch.denoising, settings, stop_at=step_index)
            losses = feedback_losses(runner, teacher, batch, x_t, step_index, settings, config.reg)
            loss = losses.f_ac + config.beta * losses.reg
            loss.backward()
        return {"t_star_index": step_index, "f_ac": losses.f_ac.item(), "reg": losses.reg.item()}

    def optimizer_step(step: int, record: bool) -> None:
        for micro in range(config.grad_accum):
            if record:
                values = {}
                seconds = meter.seconds(lambda: values.update(micro_step(step, micro)))
                micro_rows.append({"part": "rfft", "micro_step": micro, "seconds": seconds, **values})
            else:
                micro_step(step, micro)
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup_s = meter.seconds(lambda: optimizer_step(0, record=False))
    meter.reset_peak()
    step_s = meter.seconds(lambda: optimizer_step(1, record=True))
    memory = meter.peak()
    total = torch.cuda.get_device_properties(device).total_memory if meter.on_gpu else None
    summary = {"part": "rfft", "size": config.size, "local_batch": config.batch_size, "grad_accum": config.grad_accum,
               "ddim_steps": config.ddim_steps, "last_k": config.last_k, "reg": config.reg,
               "mixed_precision": config.mixed_precision, "grad_checkpointing": config.grad_checkpointing,
               "optimizer_step_s": step_s, "micro_step_mean_s": step_s / config.grad_accum, "warmup_step_s": warmup_s,
               "samples_per_s": config.batch_size * config.grad_accum / step_s, "weights_bytes": weights_bytes,
               **memory, "device_total_bytes": total,
               "fits_device": None if total is None else memory["peak_reserved_bytes"] <= total}
    return [summary, *micro_rows]


def bench_rfnet(zoo: Path, plan, meter: Meter, device: torch.device, precision: str = "bf16") -> list[dict]:
    """Training steps of the zoo's RFNet (ResNet-50 + RoBERTa-base at 384 px for the twin) at each batch,
    under ``precision`` (bf16 autocast or no)."""
    from rfad.models.rfnet import RFNet

    model = RFNet.from_pretrained(zoo / "rfnet").to(device).train()
    config = model.config
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    generator = torch.Generator(device="cpu").manual_seed(0)
    size, tokens = config.image_size, config.max_caption_tokens
    vocab = int(config.roberta["vocab_size"])
    rows = []
    for batch in plan.rfnet_batches:
        # MODEL_INPUTS order: product, generated, depth, saliency, input_ids, attention_mask.
        images = [torch.rand(batch, channels, size, size, generator=generator) for channels in (3, 3, 1, 1)]
        caption = [torch.randint(3, vocab, (batch, tokens), generator=generator),
                   torch.ones(batch, tokens, dtype=torch.long)]
        inputs = [t.to(device) for t in images + caption]
        labels = (torch.arange(batch) % config.num_classes).to(device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(*inputs)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        meter.reset_peak()
        timing = meter.times(step, plan.rfnet_steps, warmup=plan.rfnet_warmup)
        rows.append({"part": "rfnet", "batch": batch, "image_size": size, "caption_tokens": tokens,
                     "mixed_precision": precision, "step_s": timing["median_s"], "step_min_s": timing["min_s"],
                     "step_max_s": timing["max_s"], "samples_per_s": batch / timing["median_s"],
                     "repeats": timing["repeats"], **meter.peak()})
    return rows
