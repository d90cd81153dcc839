"""``rfad-train rfft``: Reliable Feedback Fine-Tuning of the ControlNet (docs/design.md, RFFT).

One loop, top to bottom: config -> rows -> models -> optimiser -> resume -> optimiser steps of
accumulated micro-steps -> logging -> checkpoints -> the tuned ControlNet folder. accelerate
handles devices, mixed precision, gradient accumulation, multi-process launch (``accelerate
launch``, gloo on CPU), TensorBoard logging and the training state, as in diffusers' scripts.
What the loop reads lives beside it: the settings (:mod:`.config`), each micro-step's rows and
random draws (:mod:`.sampling`), its constant inputs (:mod:`.micro_batch`), its losses and the
logged metrics (:mod:`.losses`).

One micro-step, for a batch of manifest rows (product cut-out, prompt, caption; labels unused),
in the style of ImageReward's ReFL (only one denoising step carries gradient):

1. canvas, control image, mask, init latents, text embeddings (``prepare_request``) and the
   caption embeddings e_c, all without gradient;
2. DDIM (T = ``ddim_steps``) with classifier-free guidance, without gradient, from x_T to x_t*,
   t* drawn among the last ``last_k`` steps: the SAME loop as generation
   (:func:`rfad.pipeline.denoise.denoise_steps`), driven by the current ControlNet;
3. at t*, with gradient: student ControlNet + frozen UNet -> eps(c), eps(0)
   (:func:`rfad.pipeline.denoise.guided_noise`); eps~ = eps(0) + w (eps(c) - eps(0));
   x0_hat = (x_t - sqrt(1 - abar_t) eps~) / sqrt(abar_t);
4. VAE decoder -> image in [0, 1]; the product pasted back differentiably with its undilated
   alpha; depth and saliency of that image; RFNet(I_o, I_g, I_d, I_s, e_c) -> logits;
5. F_AC = -mean_i log p_i(Available);
6. regulariser against the teacher (a frozen copy of the starting ControlNet) on the same x_t:
   ``cc``: L_CC = mean(((eps(c) - eps(0)) - (eps_ref(c) - eps_ref(0)))^2) (the paper's),
   ``kl``: mean((eps~ - eps_ref~)^2), ``none``: 0 (ReFL);
7. loss = F_AC + beta * L_reg. Gradients reach the ControlNet through RFNet, the saliency and
   depth models, the VAE decoder and the UNet, all frozen (``requires_grad`` False, eval mode).

Exact resume (bit-for-bit on CPU): every random choice of a micro-step (t*, the rows' noise
seeds) comes from a generator seeded by (seed, step, micro-step, process), and the rows of a
micro-step are a function of (seed, micro-step index, process) only, so nothing depends on
what ran before in the process. A checkpoint is ``accelerator.save_state`` (the ControlNet in
safetensors; AdamW state, accumulation counter and every process's global RNG states, which
accelerate reads back with ``torch.load(weights_only=True)``) plus ``state.json``, written
and verified by :mod:`rfad.trainer.checkpoints` (temporary folder renamed into place; SHA-256
of every file checked before a resume).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MethodType

import torch
from tqdm import tqdm

from rfad.canvas import CanvasSpec, canvas_to_dict
from rfad.pipeline.denoise import denoise_steps
from rfad.pipeline.torch_runner import TorchRunner
from rfad.trainer.checkpoints import (
    checkpoint_to_resume,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    several_cpu_processes,
    write_folder_atomically,
)
from rfad.trainer.rfft.config import CONFIG_FILE, TRAJECTORY_FIELDS, WEIGHT_DTYPES, RFFTConfig
from rfad.trainer.rfft.losses import StepMetrics, feedback_losses
from rfad.trainer.rfft.micro_batch import prepare_micro_batch
from rfad.trainer.rfft.sampling import load_rows, micro_batch_rows, micro_step_randomness, rows_fingerprint


# --- models ---------------------------------------------------------------------------------


@dataclass
class RFFTModels:
    """``diffusion.controlnet`` is the student (trainable); everything else is frozen."""

    diffusion: object  # DiffusionModels
    judge: object  # JudgeModels
    teacher: torch.nn.Module
    model_set: object  # ModelSet


def load_rfft_models(config: RFFTConfig, device: torch.device, weight_dtype: torch.dtype = torch.float32) -> RFFTModels:
    """Load base model, ControlNet, RFNet, depth and saliency; freeze all but the student ControlNet.

    The student stays in float32 (AdamW's master weights); with mixed precision on a GPU the
    frozen models are cast to ``weight_dtype`` as diffusers' training scripts do (autocast
    computes in that precision anyway; the cast halves their memory).
    """
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet

    model_set = ModelSet.resolve(config.models).with_overrides(
        controlnet=config.controlnet, sd_config=config.sd_config, lora=config.lora, lora_scale=config.lora_scale,
        rfnet=config.rfnet, depth=config.depth, saliency=config.saliency)
    diffusion = load_diffusion_models(model_set, device=device)  # frozen, float32
    judge = load_judge_models(model_set, device)  # frozen
    teacher = copy.deepcopy(diffusion.controlnet).eval().requires_grad_(False)
    # CPU autocast leaves group_norm/layer_norm to the caller's dtypes, and a bfloat16 weight
    # beside a float32 activation fails there; on CPU the frozen weights stay float32.
    if weight_dtype != torch.float32 and torch.device(device).type != "cpu":
        for module in (diffusion.unet, diffusion.vae, diffusion.text_encoder, teacher, *judge.modules.values()):
            module.to(dtype=weight_dtype)
    diffusion.controlnet.train().requires_grad_(True)
    return RFFTModels(diffusion=diffusion, judge=judge, teacher=teacher, model_set=model_set)


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 over a model folder's safetensors files (name and bytes), to check a resumed run's teacher."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --- checkpoints and the output folder ------------------------------------------------------


def _recorded(value):
    """A model set's field as the run record keeps it: paths as text, a declared canvas as rfad-models.json has it."""
    if isinstance(value, Path):
        return str(value)
    return canvas_to_dict(value) if isinstance(value, CanvasSpec) else value


def save_controlnet(controlnet, out: Path, run_record: dict) -> None:
    """The diffusers ControlNet folder (config.json, diffusion_pytorch_model.safetensors) plus
    ``rfft_config.json``, staged inside ``out`` and moved in file by file, so no file is ever
    half-written."""
    def write(staging: Path) -> None:
        controlnet.save_pretrained(staging, safe_serialization=True)
        (staging / CONFIG_FILE).write_text(json.dumps(run_record, indent=2) + "\n")

    write_folder_atomically(out, write)


# --- the trainer ----------------------------------------------------------------------------


def train_rfft(config: RFFTConfig, echo=print, models: RFFTModels | None = None) -> Path:
    """Fine-tune the ControlNet (see the module docstring) and write it to ``config.out``; returns the folder.

    ``models``: already loaded models (:func:`load_rfft_models`; tests and benchmarks reuse
    them and inspect them afterwards), else loaded from ``config``.
    """
    from accelerate import Accelerator

    config = config.validated()
    out = Path(config.out)
    accelerator = Accelerator(cpu=several_cpu_processes(), mixed_precision=config.mixed_precision,
                              gradient_accumulation_steps=config.grad_accum, log_with="tensorboard",
                              project_dir=str(out / "logs"))
    main = accelerator.is_main_process
    say = echo if main else (lambda *_: None)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # accelerate does not autocast to float16 on CPU: the run would silently be float32.
        raise ValueError("--mixed-precision fp16 needs a GPU; on CPU use bf16 or no")
    latest = checkpoint_to_resume(out, config.resume)

    # --- rows and models ----------------------------------------------------------------------
    spec, settings = config.canvas_spec(), config.generation_settings()
    rows, root = load_rows(config.data, config.split, spec, say)
    if len(rows) < world:
        raise ValueError(f"--data {config.data}: {len(rows)} usable rows are fewer than the {world} processes")
    weight_dtype = WEIGHT_DTYPES[config.mixed_precision]
    if models is None:
        models = load_rfft_models(config, accelerator.device, weight_dtype)
    if config.grad_checkpointing:
        # Recompute activations in backward: ControlNet and UNet blocks, and the VAE decoder
        # (at 512 px the decoder's activations are the largest of the differentiable step).
        for module in (models.diffusion.controlnet, models.diffusion.unet, models.diffusion.vae):
            module.enable_gradient_checkpointing()
    teacher_fingerprint = weights_fingerprint(models.model_set.controlnet)
    trajectory = {name: getattr(config, name) for name in TRAJECTORY_FIELDS}
    trajectory.update(processes=world, rows=rows_fingerprint(rows), teacher_sha256=teacher_fingerprint)

    # --- optimiser, state, resume ---------------------------------------------------------------
    student = models.diffusion.controlnet
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    student, optimizer = accelerator.prepare(student, optimizer)
    if accelerator.native_amp:
        from accelerate.utils import convert_outputs_to_fp32

        # accelerate hands the prepared student's outputs back in float32; the teacher's residuals
        # must reach the UNet in the same precision, or L_CC would start at a rounding error, not 0.
        models.teacher.forward = MethodType(convert_outputs_to_fp32(models.teacher.forward.__func__), models.teacher)
    step, last_metrics = 0, {}
    if config.resume:
        state = read_checkpoint_state(latest)
        changed = sorted(k for k, v in trajectory.items() if state.get("trajectory", {}).get(k) != v)
        if changed:
            raise ValueError(f"--resume: {latest} was written with other settings ({', '.join(changed)}); resume "
                             "with the same flags, data, starting ControlNet and number of processes")
        load_checkpoint(accelerator, latest)  # verified; ControlNet, AdamW, accumulation counter, global RNG states
        step, last_metrics = state["step"], state["metrics"]
        if step > config.steps:
            raise ValueError(f"--steps {config.steps}: the checkpoint is already at step {step}")
        # At step == --steps nothing is trained: the ControlNet folder is (re)written from the
        # checkpoint (a run killed between its last checkpoint and its final save).
        say(f"resuming from {latest} (step {step})")
    accelerator.init_trackers("rfft", config={k: v for k, v in asdict(config).items() if v is not None})

    runner_models = dataclasses.replace(models.diffusion, controlnet=accelerator.unwrap_model(student))
    # The DDIM part runs the bare module (no DDP hooks, no gradient); the differentiable step
    # runs the prepared one, so DDP averages its gradients across processes.
    sampler = TorchRunner(runner_models, accelerator.device, judge=models.judge)
    learner = TorchRunner(dataclasses.replace(models.diffusion, controlnet=student), accelerator.device,
                          judge=models.judge)
    teacher = TorchRunner(dataclasses.replace(models.diffusion, controlnet=models.teacher), accelerator.device)
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
    last_saved = step if config.resume else -1

    def checkpoint() -> None:
        nonlocal last_saved
        state = {"trajectory": trajectory, "metrics": last_metrics,
                 "rng": "per micro-step generators from (seed, step, micro-step, process); global RNG states "
                        "in random_states_<process>.pkl"}
        save_checkpoint(accelerator, out, step, state, config.keep_checkpoints)
        last_saved = step

    # --- the loop -------------------------------------------------------------------------------
    progress = tqdm(total=config.steps, initial=step, unit="step", desc="rfft", disable=not main)
    stop_at = min(config.steps, config.max_steps) if config.max_steps else config.steps
    while step < stop_at:
        running = StepMetrics.zeros(accelerator.device)  # F_AC, regulariser, p(Available), grad norm
        for micro in range(config.grad_accum):
            step_index, seeds = micro_step_randomness(config.seed, step, micro, rank, config.batch_size,
                                                      config.ddim_steps, config.last_k)
            indices = micro_batch_rows(len(rows), config.seed, step * config.grad_accum + micro, rank, world,
                                       config.batch_size)
            with accelerator.accumulate(student), accelerator.autocast():
                batch = prepare_micro_batch(sampler, [rows[i] for i in indices], root, spec, settings, seeds,
                                            config.negative_prompt)
                x_t = denoise_steps(sampler, batch.denoising, settings, stop_at=step_index)
                losses = feedback_losses(learner, teacher if config.reg != "none" else None, batch, x_t,
                                         step_index, settings, config.reg)
                loss = losses.f_ac + config.beta * losses.reg
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(student.parameters(), max_norm)
                    running.grad_norm = grad_norm.detach().float()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            running.add(losses)
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation lost its place: the optimiser step did not synchronise")
        step += 1
        # Means over this step's micro-steps and every process's micro-batches (one all-reduce).
        last_metrics = running.averaged(config.grad_accum, config.reg,
                                     lambda values: accelerator.reduce(values, reduction="mean"))
        accelerator.log({**{f"train/{k}": v for k, v in last_metrics.items()}, "train/lr": config.lr}, step=step)
        progress.update(1)
        progress.set_postfix({k: f"{v:.4g}" for k, v in last_metrics.items() if k != "grad_norm"})
        if config.checkpoint_steps and step % config.checkpoint_steps == 0:
            checkpoint()
    progress.close()
    if last_saved != step:
        checkpoint()  # the end of this invocation can always be resumed (or extended with a larger --steps)

    if step < config.steps:
        say(f"stopped after {step} of {config.steps} steps (--max-steps); continue with --resume")
    else:
        if main:
            model_paths = {k: _recorded(v) for k, v in vars(models.model_set).items() if v is not None}
            record = {"config": asdict(config), "models": model_paths,
                      "rows": len(rows), "processes": world, "final_step": step, "final_metrics": last_metrics,
                      "teacher_sha256": teacher_fingerprint}
            save_controlnet(accelerator.unwrap_model(student), out, record)
            say(f"tuned ControlNet written to {out} (step {step}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in last_metrics.items()) + ")")
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return out
