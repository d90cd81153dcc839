"""RFFT training-step cost: time and memory per step at the tiny shape (measured), and an
ESTIMATE of activation memory per sample at the SD-1.5 shape.

    python -m benchmarks.suite.rfft_step [--quick] [--threads N] [--skip-sd15]

Tiny shape (the test zoo, 128 px canvas, 2 rows per micro-step), measured with and without
gradient checkpointing:
- time of one DDIM step without gradient (the prefix runs t* of them: 34.5 on average with the
  paper's T = 40, last 10), and of the differentiable step (forward at t* through ControlNet,
  UNet, VAE decoder, depth, saliency and RFNet, backward, AdamW step): median of repeats;
- activation memory: bytes of the tensors autograd saves for backward during the
  differentiable forward (a ``saved_tensors_hooks`` meter; distinct storages, parameters
  excluded). With checkpointing, the tensors inside checkpointed blocks are not kept (they are
  recomputed block by block in backward, which adds one block's activations at a time);
- peak process memory: growth of the resident set size over the first differentiable step,
  sampled every 0.5 ms, in a fresh subprocess per variant with a fixed glibc mmap threshold
  (so freed tensors leave the resident set); it includes the ControlNet's gradients and
  AdamW's state, allocated by that first step, and backward's transient buffers.

SD-1.5 shape (ESTIMATE, random weights of the real architectures): the saved-for-backward meter
is run on the forward only, per sample (CFG: 2 rows through ControlNet + UNet):
- ControlNet + UNet and the VAE decoder are measured at 64, 128 and 192 px and extrapolated to
  512 px by a least-squares fit a + b * pixels (their activations grow with the pixel count;
  attention runs through scaled_dot_product_attention, which does not keep the attention
  matrix), with and without gradient checkpointing;
- depth (DPT-Large, 384 px), saliency (U2-Net full, 320 px) and RFNet (ResNet-50 +
  RoBERTa-base, 384 px) resize their input to a fixed size, so they are measured once, directly;
- float32 throughout (bf16 autocast roughly halves the activation bytes; not measured here).
Static memory (weights, the ControlNet's gradients and AdamW state) follows from the parameter
counts, reported beside it.

Writes benchmarks/results/rfft_step.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ROOT, markdown_table, module_command, time_runs, write_results

TINY_SIZE = 128
TINY_ROWS = 2
TINY_DDIM_STEPS = 10
MiB = 2**20


class SavedTensorMeter:
    """Counts the bytes autograd keeps for backward (distinct storages; parameters excluded)."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.parameters = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
        self.storages: dict[int, int] = {}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.parameters and key not in self.storages:
            self.storages[key] = storage.nbytes()
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


# --- tiny shape: measured --------------------------------------------------------------------


def tiny_fixture(root: Path):
    """Tiny zoo, an untrained tiny RFNet folder and 4 synthetic rows under ``root``."""
    from rfad.models.rfnet import RFNet, tiny_rfnet_config
    from rfad.tiny.tokenizers import build_roberta_tokenizer
    from rfad.tiny.zoo import build_tiny_zoo
    from rfad.trainer.api import write_synthetic_dataset

    if not (root / "zoo" / "rfad-models.json").is_file():
        build_tiny_zoo(root / "zoo")
        tokenizer = build_roberta_tokenizer()
        config = tiny_rfnet_config()
        config.roberta["vocab_size"] = len(tokenizer)
        torch.manual_seed(0)
        RFNet(config).save_pretrained(root / "rfnet")
        tokenizer.save_pretrained(root / "rfnet")
        write_synthetic_dataset(root / "data", 4, seed=0, size=TINY_SIZE)
    return root / "zoo", root / "rfnet", root / "data"


def tiny_setup(root: Path, checkpointing: bool):
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.trainer.api import RFFTConfig, load_rfft_models, load_rows, prepare_micro_batch

    zoo, rfnet, data = tiny_fixture(root)
    config = RFFTConfig(models=str(zoo), rfnet=str(rfnet), data=str(data), out=str(root / "out"), split="all",
                        size=TINY_SIZE, ddim_steps=TINY_DDIM_STEPS, last_k=2, batch_size=TINY_ROWS).validated()
    models = load_rfft_models(config, torch.device("cpu"))
    if checkpointing:
        for module in (models.diffusion.controlnet, models.diffusion.unet, models.diffusion.vae):
            module.enable_gradient_checkpointing()
    student = TorchRunner(models.diffusion, judge=models.judge)
    teacher = TorchRunner(dataclasses.replace(models.diffusion, controlnet=models.teacher))
    rows, root_dir = load_rows(config.data, config.split, config.canvas_spec(), echo=lambda *_: None)
    settings = config.generation_settings()
    micro = prepare_micro_batch(student, rows[:TINY_ROWS], root_dir, config.canvas_spec(), settings,
                                list(range(TINY_ROWS)))
    optimizer = torch.optim.AdamW(models.diffusion.controlnet.parameters(), lr=1e-5)
    return config, models, student, teacher, micro, settings, optimizer


def tiny_step_fn(config, models, student, teacher, micro, settings, optimizer):
    from rfad.pipeline.denoise import denoise_steps
    from rfad.trainer.api import feedback_losses

    step_index = config.ddim_steps - 1
    x_t = denoise_steps(student, micro.denoising, settings, stop_at=step_index)

    def step():
        losses = feedback_losses(student, teacher, micro, x_t, step_index, settings, "cc")
        optimizer.zero_grad(set_to_none=True)
        (losses.f_ac + losses.reg).backward()
        optimizer.step()

    def saved_bytes() -> int:
        modules = [models.diffusion.controlnet, models.diffusion.unet, models.diffusion.vae, models.teacher,
                   *models.judge.modules.values()]
        with SavedTensorMeter(modules) as meter:
            losses = feedback_losses(student, teacher, micro, x_t, step_index, settings, "cc")
        del losses
        return meter.bytes

    return x_t, step, saved_bytes


def resident_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakResident(threading.Thread):
    """Polls the resident set size every 0.5 ms until stopped; ``peak`` is the largest seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = resident_bytes()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.0005)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak, resident_bytes())


def tiny_worker(root: Path, checkpointing: bool) -> dict:
    """In a fresh process (started with a fixed glibc mmap threshold, so freed tensors go back to
    the OS and the resident size tracks live memory): peak resident growth over the first
    differentiable step, sampled every 0.5 ms."""
    config, models, student, teacher, micro, settings, optimizer = tiny_setup(root, checkpointing)
    _, step, _ = tiny_step_fn(config, models, student, teacher, micro, settings, optimizer)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = resident_bytes()
    sampler = PeakResident()
    sampler.start()
    step()
    peak = sampler.stop()
    return {"resident_before_mib": before / MiB, "peak_mib": peak / MiB, "peak_growth_mib": (peak - before) / MiB,
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_tiny(root: Path, repeats: int, threads: int | None) -> list[dict]:
    from rfad.pipeline.denoise import combine_guidance, guided_noise, scheduler_step

    rows = []
    for checkpointing in (False, True):
        config, models, student, teacher, micro, settings, optimizer = tiny_setup(root, checkpointing)
        x_t, step, saved_bytes = tiny_step_fn(config, models, student, teacher, micro, settings, optimizer)
        batch = micro.denoising

        @torch.no_grad()
        def ddim_step():
            uncond, cond = guided_noise(student, batch, batch.latents, batch.timesteps[0], 1.0)
            scheduler_step(batch, 0, combine_guidance(uncond, cond, settings.guidance_scale), batch.latents)

        prefix = time_runs(ddim_step, repeats * 2)
        timing = time_runs(step, repeats)
        command = module_command("benchmarks.suite.rfft_step", "--tiny-worker", str(root), "--checkpointing",
                                 str(int(checkpointing)))
        if threads:
            command += ["--threads", str(threads)]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # a fixed threshold: big blocks are unmapped on free
        worker = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, env=env,
                                           cwd=ROOT).stdout.splitlines()[-1])
        ddim_s = prefix["median_s"]
        rows.append({
            "shape": f"tiny ({TINY_SIZE} px, {TINY_ROWS} rows)", "grad_checkpointing": checkpointing,
            "ddim_step_no_grad_s": ddim_s, "prefix_paper_mean_s": ddim_s * 34.5,
            "grad_step_s": timing["median_s"], "grad_step_min_s": timing["min_s"],
            "micro_step_paper_s": ddim_s * 34.5 + timing["median_s"],
            "saved_for_backward_mib": saved_bytes() / MiB,
            "saved_per_sample_mib": saved_bytes() / MiB / TINY_ROWS,
            "peak_rss_growth_mib": worker["peak_growth_mib"], "repeats": repeats,
        })
        del models, optimizer
    return rows


# --- SD-1.5 shape: estimated ------------------------------------------------------------------


def sd15_models():
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    ).eval().requires_grad_(False)
    controlnet = ControlNetModel.from_unet(unet).train()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=32, sample_size=512,
    ).eval().requires_grad_(False)
    return unet, controlnet, vae


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure_diffusion(unet, controlnet, vae, latent: int, checkpointing: bool) -> tuple[int, int]:
    """(saved bytes of ControlNet + UNet for one CFG sample, saved bytes of the VAE decoder) at latent side ``latent``."""
    for module in (controlnet, unet, vae):
        if checkpointing:
            module.enable_gradient_checkpointing()
        else:
            module.disable_gradient_checkpointing()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, latent, latent, generator=g)
    text = torch.randn(2, 77, 768, generator=g)
    control = torch.rand(2, 3, latent * 8, latent * 8, generator=g)
    t = torch.full((2,), 500)
    with SavedTensorMeter([unet, controlnet]) as meter:
        down, mid = controlnet(x, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
        eps = unet(x, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False)[0]
    diffusion = meter.bytes
    del down, mid, eps
    z = torch.randn(1, 4, latent, latent, generator=g, requires_grad=True)
    with SavedTensorMeter([vae]) as meter:
        image = vae.decode(z / 0.18215, return_dict=False)[0]
    del image
    return diffusion, meter.bytes


def measure_judge() -> dict:
    """Saved bytes of depth (DPT-Large), saliency (U2-Net full) and RFNet (full) for one sample, and parameter counts."""
    from transformers import DPTConfig, DPTForDepthEstimation

    from rfad.models.maps import DepthEstimator, SaliencyEstimator
    from rfad.models.rfnet import RFNet, RFNetConfig
    from rfad.models.u2net import U2Net
    from rfad.models.u2net_config import U2NetConfig

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 512, 512, generator=g, requires_grad=True)
    out = {}
    dpt = DPTForDepthEstimation(DPTConfig(  # DPT-Large
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, image_size=384,
        patch_size=16, backbone_out_indices=[5, 11, 17, 23], neck_hidden_sizes=[256, 512, 1024, 1024],
        fusion_hidden_size=256, is_hybrid=False))
    depth = DepthEstimator(dpt, size=384).eval().requires_grad_(False)
    with SavedTensorMeter([depth]) as meter:
        depth_map = depth(image)
    out["depth"] = {"saved": meter.bytes, "params": count(depth)}
    del depth, dpt
    saliency = SaliencyEstimator(U2Net(U2NetConfig(variant="full")), size=320).eval().requires_grad_(False)
    with SavedTensorMeter([saliency]) as meter:
        saliency_map = saliency(image)
    out["saliency"] = {"saved": meter.bytes, "params": count(saliency)}
    del saliency
    rfnet = RFNet(RFNetConfig()).eval().requires_grad_(False)
    caption = torch.randn(1, 32, 384, generator=g)
    mask = torch.ones(1, 32, dtype=torch.long)
    with SavedTensorMeter([rfnet]) as meter:
        rfnet.judge(image.detach(), image, depth_map, saliency_map, caption, mask)
    out["rfnet"] = {"saved": meter.bytes, "params": count(rfnet)}
    return out


def fit_and_extrapolate(pixels: list[int], values: list[int], target: int) -> tuple[float, float]:
    """Least squares a + b * pixels; returns (value at ``target`` pixels, max relative residual of the fit)."""
    b, a = np.polyfit(np.asarray(pixels, float), np.asarray(values, float), 1)
    fitted = a + b * np.asarray(pixels, float)
    residual = float(np.max(np.abs(fitted - values) / np.asarray(values, float)))
    return float(a + b * target), residual


def bench_sd15(latents: list[int]) -> tuple[list[dict], dict]:
    unet, controlnet, vae = sd15_models()
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(CLIPTextConfig(  # SD-1.5's CLIP ViT-L/14 text tower
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, projection_dim=768))
    params = {"unet": count(unet), "controlnet": count(controlnet), "vae_decoder": count(vae.decoder)
              + count(vae.post_quant_conv), "vae_encoder": count(vae.encoder) + count(vae.quant_conv),
              "text_encoder": count(text_encoder)}
    del text_encoder
    rows, fits = [], {}
    pixels = [(8 * s) ** 2 for s in latents]
    for checkpointing in (False, True):
        measured = [measure_diffusion(unet, controlnet, vae, s, checkpointing) for s in latents]
        for part, index in (("controlnet+unet (CFG, 2 rows)", 0), ("vae decoder", 1)):
            values = [m[index] for m in measured]
            at_512, residual = fit_and_extrapolate(pixels, values, 512 * 512)
            fits[(part, checkpointing)] = at_512
            rows.append({"part": part, "grad_checkpointing": checkpointing,
                         **{f"{8 * s}px_mib": v / MiB for s, v in zip(latents, values)},
                         "512px_estimate_mib": at_512 / MiB, "fit_max_rel_residual": residual})
    del unet, controlnet, vae
    judge = measure_judge()
    for name, part in (("depth", "depth (DPT-Large, 384 px)"), ("saliency", "saliency (U2-Net, 320 px)"),
                       ("rfnet", "RFNet (ResNet-50 + RoBERTa-base, 384 px)")):
        rows.append({"part": part, "grad_checkpointing": "n/a", "512px_estimate_mib": judge[name]["saved"] / MiB,
                     "fit_max_rel_residual": "measured (input-size independent)"})
        params[name] = judge[name]["params"]
    judge_bytes = sum(v["saved"] for v in judge.values())
    totals = {}
    for checkpointing in (False, True):
        total = (fits[("controlnet+unet (CFG, 2 rows)", checkpointing)] + fits[("vae decoder", checkpointing)]
                 + judge_bytes)
        totals["with" if checkpointing else "without"] = total
        rows.append({"part": "TOTAL per sample (estimate)", "grad_checkpointing": checkpointing,
                     "512px_estimate_mib": total / MiB})
    # Everything but the student is frozen: UNet, teacher ControlNet, VAE, text encoder, judge.
    frozen = sum(params.values())
    static = {
        "parameters": params,
        "student_fp32_weights_grads_adamw_gib": params["controlnet"] * 4 * 4 / 2**30,  # weights, grads, 2 moments
        "frozen_weights_fp32_gib": frozen * 4 / 2**30,
        "frozen_weights_bf16_gib": frozen * 2 / 2**30,
        "activation_per_sample_gib_without_checkpointing": totals["without"] / 2**30,
        "activation_per_sample_gib_with_checkpointing": totals["with"] / 2**30,
    }
    return rows, static


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; SD-1.5 fit from 64 and 128 px only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-sd15", action="store_true", help="only the tiny shape")
    parser.add_argument("--tiny-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from rfad.logs import quiet_third_party

    quiet_third_party()
    if args.tiny_worker is not None:
        print(json.dumps(tiny_worker(args.tiny_worker, bool(args.checkpointing))))
        return

    repeats = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        tiny = bench_tiny(Path(tmp), repeats, args.threads)
    print("## RFFT step, tiny shape (measured)\n")
    print(markdown_table(tiny, [("grad_checkpointing", "grad ckpt"), ("ddim_step_no_grad_s", "DDIM step s (no grad)"),
                                ("grad_step_s", "diff. step s (fwd+bwd+AdamW)"),
                                ("micro_step_paper_s", "micro-step s (34.5 DDIM + diff.)"),
                                ("saved_per_sample_mib", "saved for bwd MiB/sample"),
                                ("peak_rss_growth_mib", "peak RSS growth MiB (1st step)")]))
    sd_rows, static = [], {}
    latents = [8, 16] if args.quick else [8, 16, 24]
    if not args.skip_sd15:
        sd_rows, static = bench_sd15(latents)
        print("\n## Activation memory per sample at the SD-1.5 shape, 512 px (ESTIMATE, float32)\n")
        columns = [("part", "part"), ("grad_checkpointing", "grad ckpt")]
        columns += [(f"{8 * s}px_mib", f"{8 * s} px MiB") for s in latents]
        columns += [("512px_estimate_mib", "512 px MiB"), ("fit_max_rel_residual", "fit residual")]
        print(markdown_table(sd_rows, columns))
        print("\n" + "\n".join(f"- {k}: {v if isinstance(v, dict) else f'{v:.2f}'}" for k, v in static.items()))
    settings = {"repeats": repeats, "threads": torch.get_num_threads(), "tiny_size": TINY_SIZE,
                "tiny_rows": TINY_ROWS, "tiny_ddim_steps": TINY_DDIM_STEPS, "paper_mean_prefix_steps": 34.5,
                "sd15_measured_latents": latents,
                "sd15_method": "saved-for-backward bytes measured at small sizes, linear fit in pixels, "
                               "extrapolated to 512 px; judge models measured directly (fixed input sizes); "
                               "float32; an estimate"}
    rows = [*tiny, *sd_rows, {"part": "static", **static}] if static else tiny
    path = write_results("rfft_step", rows, settings)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
