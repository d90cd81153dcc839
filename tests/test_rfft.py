"""RFFT on tiny models: what trains, what stays frozen, where gradients flow, resume, multi-process, CLI.

Everything runs at 64 px (latents 8x8) with 3-4 DDIM steps and one thread per process: on two
shared cores torch's default two threads spin against each other and run ~10x slower.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.pipeline.denoise import denoise_steps, merge_batches, start_denoising
from rfad.pipeline.request import prepare_request
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.tiny.products import draw_product
from rfad.trainer.data.manifest import read_manifest, write_manifest
from rfad.trainer.data.synth import write_synthetic_dataset
from rfad.trainer.rfft.commands import eval_rfft, rfft
from rfad.trainer.rfft.config import RFFTConfig
from rfad.trainer.rfft.losses import feedback_losses
from rfad.trainer.rfft.micro_batch import prepare_micro_batch
from rfad.trainer.rfft.sampling import load_rows
from rfad.trainer.rfft.train import load_rfft_models, train_rfft

SIZE = 64
CN_WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rfnet_dir(tmp_path_factory):
    """An untrained tiny RFNet folder as `rfad-train rfnet` writes one (weights, config, caption tokenizer)."""
    from rfad.models.rfnet import RFNet, tiny_rfnet_config
    from rfad.tiny.tokenizers import build_roberta_tokenizer

    folder = tmp_path_factory.mktemp("rfnet")
    tokenizer = build_roberta_tokenizer()
    config = tiny_rfnet_config()
    config.roberta["vocab_size"] = len(tokenizer)
    torch.manual_seed(0)
    RFNet(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 synthetic rows plus one whose product file is missing (must be reported, never used)."""
    folder = tmp_path_factory.mktemp("rfft-data")
    manifest = write_synthetic_dataset(folder, 12, seed=3, size=64)
    rows = read_manifest(manifest)
    broken = rows[0].__class__(id="broken", generated=rows[0].generated, product="products/missing.png",
                               prompt="p", caption="c", split="train")
    write_manifest(rows + [broken], manifest)
    return folder


def _flags(zoo, rfnet, data, out, *extra):
    return ["--models", str(zoo), "--rfnet", str(rfnet), "--data", str(data), "--out", str(out), "--size", str(SIZE),
            "--ddim-steps", "4", "--last-k", "2", "--batch-size", "1", "--grad-accum", "1", "--split", "all", *extra]


def _config(zoo, rfnet, data, out, **overrides) -> RFFTConfig:
    values = dict(models=str(zoo), rfnet=str(rfnet), data=str(data), out=str(out), size=SIZE, ddim_steps=4, last_k=2,
                  batch_size=2, grad_accum=1, split="all")
    values.update(overrides)
    return RFFTConfig(**values).validated()


@pytest.fixture(scope="module")
def tuned(tiny_zoo, rfnet_dir, data, tmp_path_factory):
    """An uninterrupted 2-step run (2 micro-steps each, lr large enough to change the tiny model visibly)."""
    out = tmp_path_factory.mktemp("tuned") / "cn"
    result = CliRunner().invoke(rfft, _flags(tiny_zoo, rfnet_dir, data, out, "--steps", "2", "--grad-accum", "2",
                                             "--lr", "1e-2", "--seed", "5"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def _micro_batch(models, config, seeds=(1, 2)):
    runner = TorchRunner(models.diffusion, judge=models.judge)
    settings = config.generation_settings()
    rows, root = load_rows(config.data, config.split, config.canvas_spec(), echo=lambda *_: None)
    micro = prepare_micro_batch(runner, rows[: len(seeds)], root, config.canvas_spec(), settings, list(seeds))
    step_index = config.ddim_steps - 1
    x_t = denoise_steps(runner, micro.denoising, settings, stop_at=step_index)
    return runner, settings, micro, x_t, step_index


# ---------------------------------------------------------------- the shared loop


def test_merged_requests_denoise_like_separate_requests(tiny_zoo, rfnet_dir, data, tmp_path):
    """RFFT denoises several rows as one batch: each row's latents equal its own request's run."""
    config = _config(tiny_zoo, rfnet_dir, data, tmp_path / "x")
    models = load_rfft_models(config, torch.device("cpu"))
    runner = TorchRunner(models.diffusion)
    settings = GenerationSettings(steps=3, seed=0)
    spec = CanvasSpec(width=SIZE, height=SIZE)
    batches = [start_denoising(runner, prepare_request(runner, prepare_canvas(draw_product(kind, 40, 56), spec),
                                                       prompt), [seed], settings)
               for kind, prompt, seed in (("bottle", "a bottle on sand", 4), ("mug", "a mug on a desk", 9))]
    merged = denoise_steps(runner, merge_batches(batches), settings, stop_at=2)
    for k, batch in enumerate(batches):
        alone = denoise_steps(runner, batch, settings, stop_at=2)
        assert (merged[k : k + 1] - alone).abs().max() < 1e-3  # batched kernels round differently
    assert not torch.allclose(merged[0], merged[1])


# ---------------------------------------------------------------- the objective


def test_gradients_reach_the_controlnet_through_rfnet_maps_and_vae(tiny_zoo, rfnet_dir, data, tmp_path):
    config = _config(tiny_zoo, rfnet_dir, data, tmp_path / "x", reg="none")
    models = load_rfft_models(config, torch.device("cpu"))
    runner, settings, micro, x_t, step_index = _micro_batch(models, config)
    losses = feedback_losses(runner, None, micro, x_t, step_index, settings, "none")
    for tensor in losses.tensors.values():
        tensor.retain_grad()
    losses.f_ac.backward(retain_graph=True)  # F_AC alone, no regulariser
    t = losses.tensors
    for name in ("logits", "depth", "saliency", "image", "decoded", "x0_hat"):
        assert t[name].grad is not None and t[name].grad.abs().sum() > 0, name
    # The depth and saliency models pass their gradient on to the image (the graph is not cut there).
    for name in ("depth", "saliency"):
        (through,) = torch.autograd.grad(t[name], t["image"], grad_outputs=t[name].grad, retain_graph=True)
        assert through.abs().sum() > 0, name
    grads = [p.grad for p in models.diffusion.controlnet.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    frozen = [models.diffusion.unet, models.diffusion.vae, models.diffusion.text_encoder, models.teacher,
              *models.judge.modules.values()]
    assert all(p.grad is None and not p.requires_grad for module in frozen for p in module.parameters())


def test_one_step_changes_only_the_controlnet_and_cc_departs_from_zero(tiny_zoo, rfnet_dir, data, tmp_path):
    config = _config(tiny_zoo, rfnet_dir, data, tmp_path / "cn", steps=1, lr=1e-3, seed=1)
    models = load_rfft_models(config, torch.device("cpu"))
    teacher_runner = TorchRunner(dataclasses.replace(models.diffusion, controlnet=models.teacher))
    runner, settings, micro, x_t, step_index = _micro_batch(models, config)
    before = feedback_losses(runner, teacher_runner, micro, x_t, step_index, settings, "cc")
    assert before.reg.item() == 0.0  # student == teacher: exactly, not approximately

    frozen = {"unet": models.diffusion.unet, "vae": models.diffusion.vae, "text_encoder": models.diffusion.text_encoder,
              "teacher": models.teacher, **models.judge.modules}
    snapshot = {name: {k: v.clone() for k, v in module.state_dict().items()} for name, module in frozen.items()}
    student_before = {k: v.clone() for k, v in models.diffusion.controlnet.state_dict().items()}
    train_rfft(config, echo=lambda *_: None, models=models)

    for name, module in frozen.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, snapshot[name][key]), f"{name}.{key} changed"
    student_after = models.diffusion.controlnet.state_dict()
    changed = [k for k, v in student_after.items() if not torch.equal(v, student_before[k])]
    assert len(changed) > len(student_after) // 2
    after = feedback_losses(runner, teacher_runner, micro, x_t, step_index, settings, "cc")
    assert after.reg.item() > 0.0
    # The run's output is the student, saved as a diffusers ControlNet.
    saved = load_file(str(tmp_path / "cn" / CN_WEIGHTS))
    assert all(torch.equal(saved[k], v) for k, v in student_after.items())


def test_a_few_steps_lower_f_ac_on_a_fixed_batch(tiny_zoo, rfnet_dir, data, tmp_path):
    config = _config(tiny_zoo, rfnet_dir, data, tmp_path / "x", reg="none")
    models = load_rfft_models(config, torch.device("cpu"))
    runner, settings, micro, x_t, step_index = _micro_batch(models, config)
    optimizer = torch.optim.AdamW(models.diffusion.controlnet.parameters(), lr=1e-2)  # tiny model: large lr
    values = []
    for _ in range(4):
        losses = feedback_losses(runner, None, micro, x_t, step_index, settings, "none")
        values.append(losses.f_ac.item())
        optimizer.zero_grad()
        losses.f_ac.backward()
        optimizer.step()
    assert values[-1] < values[0] - 1e-3, values
    assert all(b < a for a, b in zip(values, values[1:])), values


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize("reg", ["none", "kl", "cc"])
def test_every_regulariser_trains_and_writes_a_controlnet(tiny_zoo, rfnet_dir, data, tmp_path, reg):
    out = tmp_path / "cn"
    result = CliRunner().invoke(rfft, _flags(tiny_zoo, rfnet_dir, data, out, "--steps", "1", "--ddim-steps", "3",
                                             "--reg", reg, "--beta", "0.5"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "missing_file" in result.output  # the broken row is reported by check_rows
    record = json.loads((out / "rfft_config.json").read_text())
    assert record["config"]["reg"] == reg and record["rows"] == 12 and record["final_step"] == 1
    assert ("L_CC" in record["final_metrics"]) == (reg == "cc") and ("L_KL" in record["final_metrics"]) == (reg == "kl")
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard scalars
    from rfad.models.diffusion import load_controlnet

    load_controlnet(out)


def test_gradient_checkpointing_saves_memory_not_results(tiny_zoo, rfnet_dir, data, tmp_path):
    weights = {}
    for name, extra in (("plain", []), ("checkpointed", ["--grad-checkpointing"])):
        out = tmp_path / name
        result = CliRunner().invoke(rfft, _flags(tiny_zoo, rfnet_dir, data, out, "--steps", "1", "--ddim-steps", "3",
                                                 "--lr", "1e-3", *extra), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        weights[name] = load_file(str(out / CN_WEIGHTS))
    # Recomputation may reorder float reductions; the update is the same to rounding.
    assert all(torch.allclose(weights["plain"][k], weights["checkpointed"][k], atol=1e-6) for k in weights["plain"])
    assert json.loads((tmp_path / "checkpointed" / "rfft_config.json").read_text())["config"]["grad_checkpointing"]


def test_resume_after_interruption_equals_the_uninterrupted_run(tiny_zoo, rfnet_dir, data, tmp_path, tuned):
    uninterrupted, _ = tuned
    out = tmp_path / "cn"
    flags = _flags(tiny_zoo, rfnet_dir, data, out, "--steps", "2", "--grad-accum", "2", "--lr", "1e-2", "--seed", "5")
    cli = CliRunner()
    first = cli.invoke(rfft, flags + ["--max-steps", "1"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "continue with --resume" in first.output and not (out / CN_WEIGHTS).exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000001"]
    again = cli.invoke(rfft, flags + ["--max-steps", "1"], catch_exceptions=False)
    assert again.exit_code == 1 and "--resume" in again.output  # never silently overwrites a run
    second = cli.invoke(rfft, flags + ["--resume"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    resumed, reference = load_file(str(out / CN_WEIGHTS)), load_file(str(uninterrupted / CN_WEIGHTS))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)  # bit for bit
    # A run killed after its last checkpoint but before its final save: --resume only writes the folder.
    (out / CN_WEIGHTS).unlink()
    rewrite = cli.invoke(rfft, flags + ["--resume"], catch_exceptions=False)
    assert rewrite.exit_code == 0, rewrite.output
    rewritten = load_file(str(out / CN_WEIGHTS))
    assert all(torch.equal(rewritten[k], reference[k]) for k in reference)
    changed = cli.invoke(rfft, flags + ["--resume", "--steps", "3", "--lr", "1e-3"], catch_exceptions=False)
    assert changed.exit_code == 1 and "lr" in changed.output
    # A damaged checkpoint file is found before anything is loaded, named, with the way out.
    weights = out / "checkpoints" / "step-00000002" / "model.safetensors"
    data_bytes = bytearray(weights.read_bytes())
    data_bytes[-1] ^= 0xFF
    weights.write_bytes(bytes(data_bytes))
    corrupt = cli.invoke(rfft, flags + ["--resume", "--steps", "3"], catch_exceptions=False)
    assert corrupt.exit_code == 1 and "model.safetensors is corrupt" in corrupt.output
    assert "step-00000001 is still there" in corrupt.output


def test_two_processes_train_and_write_a_loadable_controlnet(tiny_zoo, rfnet_dir, data, tmp_path):
    script = tmp_path / "launch_rfft.py"
    script.write_text("from rfad.trainer.rfft.commands import rfft\nrfft()\n")
    out = tmp_path / "cn"
    # Without GPUs, `accelerate launch --cpu --num_processes 2` starts ONE process; --multi_gpu
    # (accelerate's torchrun launcher) starts two, and the trainer forms a gloo group on CPU.
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               *_flags(tiny_zoo, rfnet_dir, data, out, "--steps", "1", "--ddim-steps", "3")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("tuned ControlNet written to") == 1  # only the main process reports and writes
    record = json.loads((out / "rfft_config.json").read_text())
    assert record["processes"] == 2 and record["final_step"] == 1
    checkpoint = out / "checkpoints" / "step-00000001"
    assert sorted(p.name for p in checkpoint.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]
    from rfad.models.diffusion import load_controlnet

    load_controlnet(out)


def test_generate_uses_the_tuned_controlnet(tiny_zoo, tuned, tmp_path):
    from rfad.app.cli import main

    out, _ = tuned
    product = tmp_path / "product.png"
    draw_product("bottle").save(product)
    images = {}
    for name, extra in (("base", []), ("tuned", ["--controlnet", str(out)])):
        png = tmp_path / f"{name}.png"
        result = CliRunner().invoke(main, ["generate", "--models", str(tiny_zoo), "--product", str(product),
                                           "--prompt", "a bottle on a table", "--steps", "2", "--size", "128",
                                           "--out", str(png), *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        images[name] = np.asarray(Image.open(png)).astype(int)
    assert np.abs(images["base"] - images["tuned"]).max() > 0


def test_eval_rfft_reports_base_and_tuned(tiny_zoo, rfnet_dir, data, tuned, tmp_path):
    """Availability, attempts, diversity across seeds and products, and prompt fidelity: the rows'
    prompts are rewritten to miniature-world ones, which fidelity reads back."""
    import shutil

    from rfad.trainer.data.scenes import draw_scene

    out, _ = tuned
    data = Path(shutil.copytree(data, tmp_path / "data"))
    rows = read_manifest(data / "manifest.jsonl")
    prompts = [draw_scene("Available", np.random.default_rng([29, i])).prompt for i in range(len(rows))]
    write_manifest([dataclasses.replace(row, prompt=prompt) for row, prompt in zip(rows, prompts)],
                   data / "manifest.jsonl")
    json_path = tmp_path / "e.json"
    result = CliRunner().invoke(eval_rfft, ["--models", str(tiny_zoo), "--controlnet", str(out), "--rfnet",
                                            str(rfnet_dir), "--data", str(data), "--products", "2", "--seeds", "2",
                                            "--steps", "2", "--size", str(SIZE), "--max-attempts", "2",
                                            "--json", str(json_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "| tuned |" in result.output and "| base |" in result.output
    metrics = json.loads(json_path.read_text())
    for name in ("base", "tuned"):
        r = metrics[name]
        assert 0.0 <= r["ava"] <= 1.0 and 1.0 <= r["attempts_mean"] <= 3.0
        assert 0 <= r["censored"] <= 4 and r["collapse_distance"] > 0 and r["cross_product_distance"] > 0
        fidelity = r["prompt_fidelity"]
        assert fidelity["faithful"]["n"] == 2 * 2 and 0.0 <= fidelity["faithful"]["share"] <= 1.0
    assert metrics["cross_product_ratio"] > 0 and "across products" in result.output
    assert len(metrics["samples"]) == 2 * 2 * 2 and metrics["settings"]["censored_attempts_counted_as"] == 3
    # The same seeds and canvases for both: the two ControlNets' images differ, so do their verdicts.
    base = [s["first_p_available"] for s in metrics["samples"] if s["controlnet"] == "base"]
    tuned_p = [s["first_p_available"] for s in metrics["samples"] if s["controlnet"] == "tuned"]
    assert base != tuned_p
