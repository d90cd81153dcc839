"""``rfad-train rfft``: Reliable Feedback Fine-Tuning of the ControlNet (DESIGN.md section 6).

One loop, top to bottom: config -> rows -> models -> optimiser -> resume -> optimiser steps of
accumulated micro-steps -> logging -> checkpoints -> the tuned ControlNet folder. accelerate
handles devices, mixed precision, gradient accumulation, multi-process launch (``accelerate
launch``, gloo on CPU), TensorBoard logging and the training state, as in diffusers' scripts.

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
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MethodType

import numpy as np
import torch
from tqdm import tqdm

from rfad.canvas import AdCanvas, CanvasError, CanvasSpec, prepare_canvas
from rfad.pipeline.denoise import (
    DenoisingBatch,
    combine_guidance,
    denoise_steps,
    guided_noise,
    merge_batches,
    start_denoising,
)
from rfad.pipeline.caption import tokenize_caption
from rfad.pipeline.request import image_to_tensor, prepare_request
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.trainer.checkpoints import (
    checkpoint_to_resume,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    several_cpu_processes,
    write_folder_atomically,
)
from rfad.trainer.data.manifest import ManifestRow, check_rows, manifest_path, read_manifest, resolve_path

CONFIG_FILE = "rfft_config.json"
REGULARISERS = ("cc", "kl", "none")
SPLIT_CHOICES = ("train", "val", "test", "all")
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Settings a resumed run must share with the run it continues (anything else would change the
# trajectory); --steps may grow, checkpoint cadence and --max-steps may change.
TRAJECTORY_FIELDS = ("split", "batch_size", "grad_accum", "lr", "weight_decay", "max_grad_norm", "reg", "beta",
                     "ddim_steps", "last_k", "guidance", "controlnet_scale", "size", "product_scale",
                     "negative_prompt", "mixed_precision", "grad_checkpointing", "seed")


# --- config ---------------------------------------------------------------------------------


@dataclass
class RFFTConfig:
    """Every flag of ``rfad-train rfft``. Defaults are the paper's (512 px, 40 DDIM steps, t* among
    the last 10, CFG 7.5, batch 4 x accumulation 4, AdamW lr 1e-5); beta is not published."""

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
    ddim_steps: int = 40
    last_k: int = 10
    guidance: float = 7.5
    controlnet_scale: float = 1.0
    size: int = 512
    product_scale: float = 0.75
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
        CanvasSpec(width=self.size, height=self.size, product_scale=self.product_scale)  # raises ValueError
        return self

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(steps=self.ddim_steps, guidance_scale=self.guidance,
                                  controlnet_scale=self.controlnet_scale, eta=0.0, seed=self.seed)

    def canvas_spec(self) -> CanvasSpec:
        return CanvasSpec(width=self.size, height=self.size, product_scale=self.product_scale)


# --- rows -----------------------------------------------------------------------------------


def load_rows(data: str | os.PathLike, split: str, spec: CanvasSpec, echo=print) -> tuple[list[ManifestRow], Path]:
    """(usable rows of ``split``, the manifest's folder).

    Labels are not read by RFFT, so they are cleared before ``check_rows``: a row is dropped for
    a missing or undecodable image or a product without usable alpha, never for its label. A
    product that passes those checks but cannot be placed on the canvas (e.g. its cut-out is
    smaller than ``spec.min_side``) is dropped too. Every drop is reported by reason through
    ``echo``; no dropped row ever enters a batch.
    """
    manifest = manifest_path(data)
    rows = read_manifest(manifest)
    if split == "train":
        rows = [row for row in rows if row.split in ("train", None)]
    elif split != "all":
        rows = [row for row in rows if row.split == split]
    good, report = check_rows([dataclasses.replace(row, label=None) for row in rows], manifest.parent)
    usable = []
    for row in good:
        try:
            prepare_canvas(resolve_path(manifest.parent, row.product), spec)
        except CanvasError as exc:
            report.skip("product_canvas", f"id {row.id!r}: {exc}")
            report.kept -= 1
            continue
        usable.append(row)
    if report.n_skipped:
        echo(report.format(title=f"{manifest} split {split!r}"))
    if not usable:
        raise ValueError(f"--data {data}: no usable rows in split {split!r}")
    return usable, manifest.parent


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist())


def micro_batch_rows(n: int, seed: int, micro_index: int, rank: int, world: int, batch_size: int) -> list[int]:
    """Row indices of this process's micro-step ``micro_index`` (counted over the whole run).

    Each epoch is a permutation fixed by (seed, epoch), dealt round-robin to the processes and
    cut to ``n // world`` rows each (every process then has the same number); a process walks
    its share ``batch_size`` rows at a time, across epoch boundaries. Stateless: a resumed run
    finds its rows from the micro-step index alone.
    """
    per_process = n // world
    if per_process < 1:
        raise ValueError(f"{n} usable rows cannot be shared by {world} processes")
    indices = []
    for j in range(batch_size):
        epoch, position = divmod(micro_index * batch_size + j, per_process)
        indices.append(_permutation(n, seed, epoch)[rank::world][position])
    return indices


def micro_step_randomness(seed: int, step: int, micro: int, rank: int, batch_size: int, ddim_steps: int,
                          last_k: int) -> tuple[int, list[int]]:
    """(t* as a step index among the last ``last_k`` of ``ddim_steps``, one noise seed per row),
    drawn from a generator seeded by (seed, optimiser step, micro-step, process) only."""
    rng = np.random.default_rng([seed, step, micro, rank])
    step_index = int(rng.integers(ddim_steps - last_k, ddim_steps))
    seeds = [int(s) for s in rng.integers(0, 2**62, size=batch_size)]
    return step_index, seeds


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


# --- one micro-step's inputs and losses -----------------------------------------------------


@dataclass
class MicroBatch:
    """The constant inputs of one micro-step of B rows (on the runner's device).

    denoising: the B candidates' DDIM state (one candidate per row, merged).
    product_image: float [B, 3, H, W] in [0, 1], the product on the canvas (RFNet's I_o).
    product_rgb: float [B, 3, H, W] in [0, 1], the product's colours (0 off the product).
    product_alpha: float [B, 1, H, W] in [0, 1], the undilated alpha used to paste the product back.
    caption_embeddings: float [B, L, d] (RFNet's e_c); caption_mask: int64 [B, L].
    """

    canvases: list[AdCanvas]
    denoising: DenoisingBatch
    product_image: torch.Tensor
    product_rgb: torch.Tensor
    product_alpha: torch.Tensor
    caption_embeddings: torch.Tensor
    caption_mask: torch.Tensor


@torch.no_grad()
def prepare_micro_batch(runner: TorchRunner, rows: list[ManifestRow], root: Path, spec: CanvasSpec,
                        settings: GenerationSettings, seeds: list[int], negative_prompt: str = "") -> MicroBatch:
    """Canvases, per-request constants (``prepare_request``), initial draws and e_c for ``rows``."""
    device = runner.device
    canvases, batches, products, colours, alphas = [], [], [], [], []
    for row, seed in zip(rows, seeds):
        canvas = prepare_canvas(resolve_path(root, row.product), spec)
        prepared = prepare_request(runner, canvas, row.prompt, negative_prompt)
        canvases.append(canvas)
        batches.append(start_denoising(runner, prepared, [seed], settings))
        products.append(image_to_tensor(canvas.init_image, device, torch.float32, signed=False))
        colours.append(image_to_tensor(canvas.product_rgb, device, torch.float32, signed=False))
        alphas.append(image_to_tensor(canvas.product_alpha[..., None], device, torch.float32, signed=False))
    # The tokenizer pads every caption to its model_max_length, so the rows stack.
    tokens = [tokenize_caption(runner.info.caption_tokenizer, row.caption) for row in rows]
    ids = torch.cat([t[0] for t in tokens]).to(device)
    mask = torch.cat([t[1] for t in tokens]).to(device)
    return MicroBatch(canvases=canvases, denoising=merge_batches(batches), product_image=torch.cat(products),
                      product_rgb=torch.cat(colours), product_alpha=torch.cat(alphas),
                      caption_embeddings=runner.rfnet_text(ids, mask), caption_mask=mask)


@dataclass
class FeedbackLosses:
    """Scalar losses of one micro-step, and the intermediate tensors of the differentiable path
    (x0_hat [B,4,h,w], decoded/image [B,3,H,W], depth/saliency [B,1,H,W], logits [B,5]) for diagnostics."""

    f_ac: torch.Tensor
    reg: torch.Tensor
    p_available: torch.Tensor
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def feedback_losses(student: TorchRunner, teacher: TorchRunner | None, micro: MicroBatch, x_t: torch.Tensor,
                    step_index: int, settings: GenerationSettings, reg: str) -> FeedbackLosses:
    """Steps 3-6 of the module docstring at DDIM step ``step_index`` (t* = timesteps[step_index]).

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
    depth = student.depth(image)
    saliency = student.saliency(image)
    # Logits, not the runner's probabilities: log_softmax is the numerically stable route to log p.
    logits = student.judge_models.rfnet.judge(micro.product_image, image, depth, saliency,
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


# --- checkpoints and the output folder ------------------------------------------------------


def save_controlnet(controlnet, out: Path, run_record: dict) -> None:
    """The diffusers ControlNet folder (config.json, diffusion_pytorch_model.safetensors) plus
    ``rfft_config.json``, staged inside ``out`` and moved in file by file, so no file is ever
    half-written."""
    def write(staging: Path) -> None:
        controlnet.save_pretrained(staging, safe_serialization=True)
        (staging / CONFIG_FILE).write_text(json.dumps(run_record, indent=2) + "\n")

    write_folder_atomically(out, write)


def _rows_fingerprint(rows: list[ManifestRow]) -> str:
    return hashlib.sha256("\n".join(f"{r.id}\t{r.product}\t{r.prompt}\t{r.caption}" for r in rows).encode()).hexdigest()


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
    trajectory.update(processes=world, rows=_rows_fingerprint(rows), teacher_sha256=teacher_fingerprint)

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
    reg_name = {"cc": "L_CC", "kl": "L_KL", "none": None}[config.reg]
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
        sums = torch.zeros(4, device=accelerator.device)  # F_AC, L_reg, p(Available), grad norm
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
                    sums[3] = grad_norm.detach().float()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sums[:3] += torch.stack([losses.f_ac.detach(), losses.reg.detach(), losses.p_available]).float()
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation lost its place: the optimiser step did not synchronise")
        step += 1
        sums[:3] /= config.grad_accum
        means = accelerator.reduce(sums, reduction="mean").tolist()  # every process's micro-batches
        last_metrics = {"F_AC": means[0], "p_available": means[2], "grad_norm": means[3]}
        if reg_name is not None:
            last_metrics[reg_name] = means[1]
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
            model_paths = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(models.model_set).items()
                           if v is not None}
            record = {"config": asdict(config), "models": model_paths,
                      "rows": len(rows), "processes": world, "final_step": step, "final_metrics": last_metrics,
                      "teacher_sha256": teacher_fingerprint}
            save_controlnet(accelerator.unwrap_model(student), out, record)
            say(f"tuned ControlNet written to {out} (step {step}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in last_metrics.items()) + ")")
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return out
