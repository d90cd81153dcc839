"""RFFT's regularisers against their closed forms (DESIGN.md section 6; issue 27, item 1).

The noise predictor is replaced by a stand-in whose text direction is set by hand, so every
quantity of the loss is known on paper:

    eps(x, e) = GAIN * x + s * (W mean_tokens(e) + o)          (s: the ControlNet scale)

The stand-in is a real ``torch.nn.Linear`` (W) and bias vector (o) behind the torch runner's
``controlnet`` / ``unet`` methods; everything else is the tiny zoo's real models (CLIP text
encoder, VAE, depth, saliency, RFNet), run by the trainer's own functions in the trainer's
order (``micro_step_randomness`` -> ``prepare_micro_batch`` -> ``denoise_steps`` ->
``feedback_losses``). With p0, p1 the token-mean embeddings of the negative prompt and the
prompt of a row, and w the guidance:

    eps(c) - eps(0) = s W (p1 - p0)                            (the text direction; o cancels)
    eps~            = eps(0) + w (eps(c) - eps(0)) = GAIN x + s (W q + o),   q = p0 + w (p1 - p0)
    L_CC = mean_{b,ch} (s (W - W_ref)(p1 - p0))^2              (independent of o)
    L_KL = mean_{b,ch} (s ((W - W_ref) q + o - o_ref))^2

and their gradients with respect to W and o follow by hand (below). The mean runs over the
[B, 4, h, w] elements; each (b, ch) value is repeated h*w times, so it equals the mean over [B, 4].
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from rfad.pipeline.denoise import denoise_steps
from rfad.pipeline.request import encode_prompts
from rfad.pipeline.torch_runner import TorchRunner
from rfad.trainer.data.synth import write_synthetic_dataset
from rfad.trainer.rfft.config import RFFTConfig
from rfad.trainer.rfft.losses import feedback_losses
from rfad.trainer.rfft.micro_batch import prepare_micro_batch
from rfad.trainer.rfft.sampling import load_rows, micro_step_randomness
from rfad.trainer.rfft.train import load_rfft_models

SIZE = 64
ROWS = 2
GAIN = 0.5  # eps's dependence on x_t: the same for student and teacher, so it cancels in both regularisers


class TextDirection(nn.Module):
    """Stand-in ControlNet: embeddings [N, 77, D] -> W mean_tokens(e) + o, float [N, 4]."""

    def __init__(self, width: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(width, 4, bias=False)
        self.offset = nn.Parameter(torch.zeros(4))
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(4, width, generator=generator))
            self.offset.copy_(torch.randn(4, generator=generator))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.proj(embeddings.mean(dim=1)) + self.offset


class StandInRunner(TorchRunner):
    """The tiny zoo's torch runner with ControlNet + UNet replaced by eps = GAIN x + s (W mean(e) + o).

    ``seen`` records, per ControlNet call, the timesteps it saw and whether autograd was recording.
    """

    def __init__(self, models, judge, net: TextDirection):
        super().__init__(models, judge=judge)
        self.net = net
        self.seen: list[tuple[list[int], bool]] = []

    def controlnet(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        self.seen.append((sorted(set(timestep.tolist())), torch.is_grad_enabled()))
        return [], conditioning_scale * self.net(encoder_hidden_states)[:, :, None, None]

    def unet(self, sample, timestep, encoder_hidden_states, down_residuals, mid_residual):
        return GAIN * sample + mid_residual


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tiny_zoo, tmp_path_factory):
    """The paper's RFFT settings on the tiny zoo, its real models loaded as the trainer loads them."""
    data = tmp_path_factory.mktemp("rfft-loss-data")
    write_synthetic_dataset(data, 6, seed=5, size=SIZE)
    config = RFFTConfig(models=str(tiny_zoo), data=str(data), out=str(data / "out"), size=SIZE,
                        batch_size=ROWS, split="all").validated()
    models = load_rfft_models(config, torch.device("cpu"))
    rows, root = load_rows(config.data, config.split, config.canvas_spec(), echo=lambda *_: None)
    return config, models, rows[:ROWS], root


def _micro_step(setup, student_net: TextDirection, teacher_net: TextDirection, reg: str, step: int = 3):
    """One micro-step as ``train_rfft`` runs it (same functions, same order), on the stand-ins."""
    config, models, rows, root = setup
    student = StandInRunner(models.diffusion, models.judge, student_net)
    teacher = StandInRunner(models.diffusion, None, teacher_net)
    settings = config.generation_settings()
    step_index, seeds = micro_step_randomness(config.seed, step, 0, 0, config.batch_size, config.ddim_steps,
                                              config.last_k)
    batch = prepare_micro_batch(student, rows, root, config.canvas_spec(), settings, seeds, config.negative_prompt)
    x_t = denoise_steps(student, batch.denoising, settings, stop_at=step_index)
    losses = feedback_losses(student, teacher, batch, x_t, step_index, settings, reg)
    return losses, student, teacher, batch, x_t, step_index, settings


def _pooled_prompts(setup, runner) -> tuple[torch.Tensor, torch.Tensor]:
    """(p0, p1): token-mean embeddings of each row's negative prompt and prompt, float [B, D], computed
    row by row (independently of how the micro-batch lays its rows out)."""
    config, _, rows, _ = setup
    with torch.no_grad():
        embeddings = [encode_prompts(runner, row.prompt, config.negative_prompt) for row in rows]
    return torch.stack([e[0].mean(dim=0) for e in embeddings]), torch.stack([e[1].mean(dim=0) for e in embeddings])


def _nets(width: int, direction_shift: float, offset_shift: float) -> tuple[TextDirection, TextDirection]:
    """(student, teacher): the student's W and o moved from the teacher's by set amounts."""
    teacher = TextDirection(width, seed=11).requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True)
    generator = torch.Generator().manual_seed(12)
    with torch.no_grad():
        student.proj.weight.add_(direction_shift * torch.randn(student.proj.weight.shape, generator=generator))
        student.offset.add_(offset_shift * torch.randn(4, generator=generator))
    return student, teacher


def _width(setup) -> int:
    return setup[1].diffusion.text_encoder.config.hidden_size


def test_the_regularisers_run_on_the_papers_step_and_guidance(setup):
    """t* is drawn among the last 10 of 40 DDIM steps; the prefix runs without gradient and only the
    step at t* records one; x0_hat is built from the guided eps~ with w = 7.5 and abar(t*)."""
    config = setup[0]
    assert (config.ddim_steps, config.last_k, config.guidance) == (40, 10, 7.5)
    draws = {micro_step_randomness(seed, step, micro, 0, ROWS, 40, 10)[0]
             for seed in range(4) for step in range(25) for micro in range(2)}
    assert draws == set(range(30, 40))

    student_net, teacher_net = _nets(_width(setup), 0.3, 0.2)
    losses, student, teacher, batch, x_t, step_index, settings = _micro_step(setup, student_net, teacher_net, "cc")
    timesteps = batch.denoising.timesteps.tolist()
    t_star = timesteps[step_index]
    assert 30 <= step_index < 40 and not x_t.requires_grad
    assert student.seen == [([t], False) for t in timesteps[:step_index]] + [([t_star], True)]
    assert teacher.seen == [([t_star], False)]

    p0, p1 = _pooled_prompts(setup, student)
    s, w = settings.controlnet_scale, settings.guidance_scale
    q = p0 + w * (p1 - p0)
    with torch.no_grad():
        guided = GAIN * x_t + (s * student_net(q[:, None, :]))[:, :, None, None]  # net(q) = W q + o
    abar = batch.denoising.scheduler.alphas_cumprod[t_star]
    expected_x0 = (x_t - (1 - abar).sqrt() * guided) / abar.sqrt()
    assert torch.allclose(losses.tensors["x0_hat"], expected_x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reg", ["cc", "kl"])
def test_loss_and_gradient_equal_the_closed_form(setup, reg):
    student_net, teacher_net = _nets(_width(setup), 0.3, 0.2)
    losses, student, _, _, _, _, settings = _micro_step(setup, student_net, teacher_net, reg)
    losses.reg.backward()

    p0, p1 = _pooled_prompts(setup, student)
    s, w = settings.controlnet_scale, settings.guidance_scale
    delta_w = (student_net.proj.weight - teacher_net.proj.weight).detach().double()
    delta_o = (student_net.offset - teacher_net.offset).detach().double()
    p0, p1 = p0.double(), p1.double()
    n = ROWS * 4  # the mean over [B, 4, h, w] is the mean over [B, 4]
    if reg == "cc":
        direction = p1 - p0
        error = s * direction @ delta_w.T  # [B, 4]: eps(c) - eps(0) minus the teacher's
        value = (error**2).mean()
        grad_w = 2 * s / n * error.T @ direction
        grad_o = torch.zeros(4, dtype=torch.float64)  # o cancels in eps(c) - eps(0)
    else:
        q = p0 + w * (p1 - p0)
        error = s * (q @ delta_w.T + delta_o)  # [B, 4]: eps~ minus the teacher's eps~
        value = (error**2).mean()
        grad_w = 2 * s / n * error.T @ q
        grad_o = 2 * s / n * error.sum(dim=0)
    assert value > 1e-3  # the case is not degenerate
    np.testing.assert_allclose(losses.reg.item(), value.item(), rtol=1e-4)
    np.testing.assert_allclose(student_net.proj.weight.grad.double().numpy(), grad_w.numpy(), rtol=1e-3,
                               atol=1e-6 * float(grad_w.abs().max()))
    np.testing.assert_allclose(student_net.offset.grad.double().numpy(), grad_o.numpy(), rtol=1e-3,
                               atol=1e-6 * float(grad_w.abs().max()))


def test_cc_holds_only_the_text_direction_kl_holds_the_guided_noise(setup):
    """A student that keeps the teacher's text direction but moves eps everywhere (its offset o) is
    free under CC (L_CC = 0) and pulled back under KL; a student whose direction
    differs pays under both."""
    width = _width(setup)
    same_direction = _nets(width, 0.0, 0.5)
    other_direction = _nets(width, 0.3, 0.0)
    cc = _micro_step(setup, *same_direction, "cc")[0]
    assert cc.reg.item() < 1e-9  # zero up to float32 rounding of (W p1 + o) - (W p0 + o)
    kl = _micro_step(setup, *same_direction, "kl")[0]
    assert kl.reg.item() > 1e-2
    kl.reg.backward()
    assert same_direction[0].offset.grad.abs().max() > 1e-3
    assert _micro_step(setup, *other_direction, "cc")[0].reg.item() > 1e-3
