"""Recurrent Generation in process: RFNet, depth and saliency judge every candidate (tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.app.cli import main
from rfad.models.diffusion import load_diffusion_models
from rfad.models.judge import load_judge_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.generate import generate
from rfad.pipeline.judge import RunnerJudge, tokenize_caption
from rfad.pipeline.request import image_to_tensor
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.tiny.products import draw_product

SIZE = 128


@pytest.fixture(scope="module")
def rfnet_dir(tmp_path_factory):
    """An untrained tiny RFNet saved as `rfad-train rfnet` saves one: weights + config + caption tokenizer."""
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


class CountingRunner(TorchRunner):
    """The torch runner, counting component calls (to check what is computed once per request)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counted: dict[str, int] = {}

    def _count(self, name):
        self.counted[name] = self.counted.get(name, 0) + 1

    def text_encoder(self, input_ids):
        self._count("text_encoder")
        return super().text_encoder(input_ids)

    def rfnet_text(self, input_ids, attention_mask):
        self._count("rfnet_text")
        return super().rfnet_text(input_ids, attention_mask)

    def vae_encoder(self, images):
        self._count("vae_encoder")
        return super().vae_encoder(images)

    def rfnet(self, *args):
        self._count("rfnet")
        return super().rfnet(*args)


@pytest.fixture(scope="module")
def runner(tiny_zoo, rfnet_dir):
    model_set = ModelSet.resolve(tiny_zoo).with_overrides(rfnet=rfnet_dir)
    return CountingRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))


@pytest.fixture(scope="module")
def canvas():
    return prepare_canvas(draw_product("mug", 60, 80), CanvasSpec(width=SIZE, height=SIZE, mask_dilation=6))


def test_judge_equals_rfnet_on_the_same_inputs(runner, canvas):
    judge = RunnerJudge(runner)
    state = judge.prepare(canvas, "blue ceramic mug 350ml")
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    probabilities = judge(images, state)
    assert probabilities.shape == (3, 5) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # The same verdict computed by hand from the models: maps of the generated images, caption, product.
    models = runner.judge_models
    # Both images at the judge's working size first (rfad.pipeline.judge_view), as every runner sees them.
    size = runner.info.judge_size
    generated = F.interpolate(torch.cat([image_to_tensor(i, runner.device, torch.float32, signed=False) for i in images]),
                              size=(size, size), mode="bilinear", align_corners=False)
    ids, mask = tokenize_caption(models.caption_tokenizer, "blue ceramic mug 350ml")
    product = F.interpolate(image_to_tensor(canvas.init_image, runner.device, torch.float32, signed=False),
                            size=(size, size), mode="bilinear", align_corners=False).expand(3, -1, -1, -1)
    with torch.no_grad():
        logits = models.rfnet(product, generated, models.depth(generated), models.saliency(generated),
                              ids.expand(3, -1), mask.expand(3, -1))
    assert np.allclose(probabilities, logits.softmax(-1).numpy(), atol=1e-5)
    assert not np.allclose(probabilities[0], probabilities[1])  # the verdict depends on the image


def test_per_request_constants_are_computed_once(runner, canvas):
    runner.counted.clear()
    result = generate(runner, canvas, "ad", GenerationSettings(steps=2, candidates=2, max_attempts=3, threshold=1.0),
                      caption="blue mug", judge=RunnerJudge(runner))
    assert result.attempts == 3 and len(result.candidates) == 6
    # prompt + negative prompt in one text_encoder call, one caption embedding, one VAE encode
    # of the init image, and one RFNet call per attempt (candidates judged as a batch).
    assert runner.counted == {"text_encoder": 1, "rfnet_text": 1, "vae_encoder": 1, "rfnet": 3}
    assert all(c.probabilities is not None and c.available is False for c in result.candidates)


def test_generate_cli_regenerates_until_available(tiny_zoo, rfnet_dir, product_png, tmp_path):
    cli = CliRunner()
    base = ["generate", "--models", str(tiny_zoo), "--rfnet", str(rfnet_dir), "--product", str(product_png),
            "--prompt", "a mug on a desk", "--caption", "blue mug", "--steps", "2", "--size", "128"]
    result = cli.invoke(main, base + ["--out", str(tmp_path / "never.png"), "--max-attempts", "3",
                                      "--threshold", "1.0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    never = json.loads((tmp_path / "never.json").read_text())
    assert never["judged"] and never["attempts"] == 3 and len(never["candidates"]) == 3
    assert never["images"][0]["available"] is False and len(never["images"][0]["probabilities"]) == 5
    result = cli.invoke(main, base + ["--out", str(tmp_path / "first.png"), "--threshold", "0.0"],
                        catch_exceptions=False)
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["attempts"] == 1 and first["images"][0]["available"] is True
    assert "1/1 Available after 1 attempt" in result.output
