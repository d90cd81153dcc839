"""The method benchmark's pieces: RFNet ablations, RFFT on the miniature world's canvas, the metrics,
and the loop's measurements on the shipped generator (the full benchmark is not run in CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch



def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    image = lambda c: torch.rand(2, c, 64, 64, generator=g)  # noqa: E731
    return image(3), image(3), image(1), image(1), torch.randint(3, 300, (2, 12), generator=g)


@pytest.mark.parametrize("ablate, position", [("product", 0), ("depth", 2), ("saliency", 3), ("caption", 4)])
def test_an_ablated_input_no_longer_changes_rfnet_s_verdict(ablate, position):
    from rfad.models.rfnet import RFNet, tiny_rfnet_config

    mask = torch.ones(2, 12, dtype=torch.long)
    a, b = list(_inputs(0)), list(_inputs(1))
    other = list(a)
    other[position] = b[position]
    torch.manual_seed(0)
    full = RFNet(tiny_rfnet_config()).eval()
    assert not torch.allclose(full(*a, mask), full(*other, mask))  # the input matters to the full model
    config = tiny_rfnet_config()
    config.ablate = [ablate]
    ablated = RFNet(config).eval()
    ablated.load_state_dict(full.state_dict())
    assert torch.equal(ablated(*a, mask), ablated(*other, mask))


def test_ablating_the_feature_filter_skips_it_and_survives_save_and_load(tmp_path):
    from rfad.models.rfnet import RFNet, tiny_rfnet_config

    config = tiny_rfnet_config()
    config.ablate = ["filter"]
    model = RFNet(config)
    *images, ids = _inputs(0)
    model(*images, ids, torch.ones(2, 12, dtype=torch.long)).sum().backward()
    assert all(p.grad is None for p in model.filters.parameters())
    assert model.image_projection.weight.grad is not None
    model.save_pretrained(tmp_path / "m")
    assert RFNet.from_pretrained(tmp_path / "m").config.ablate == ["filter"]
    with pytest.raises(ValueError, match="ablate: unknown"):
        config.ablate = ["mask"]
        type(config)(**config.to_dict())


def test_rfft_config_places_products_on_the_miniature_world_s_canvas():
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.trainer.rfft.config import TRAJECTORY_FIELDS, RFFTConfig

    config = RFFTConfig(models="m", data="d", out="o", size=MINIWORLD_CANVAS.width,
                        product_scale=MINIWORLD_CANVAS.product_scale, upscale=True, mask_dilation=5)
    assert config.canvas_spec() == MINIWORLD_CANVAS
    assert {"upscale", "mask_dilation"} <= set(TRAJECTORY_FIELDS)  # a resumed run keeps its canvas


def test_auc_is_the_share_of_correctly_ordered_pairs():
    from benchmarks.studies.method.metrics import auc

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float).tolist()  # many ties
    positives = (rng.random(40) < 0.4).tolist()
    pairs = [(p, n) for p, lp in zip(scores, positives) if lp for n, ln in zip(scores, positives) if not ln]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auc(scores, positives) == pytest.approx(expected)
    assert auc([0.1, 0.9], [False, True]) == 1.0 and auc([0.9, 0.1], [False, True]) == 0.0
    assert auc([0.3, 0.4], [True, True]) is None


def test_single_shot_returns_generate_s_images_with_oracle_and_early_verdicts(tiny_zoo):
    """The benchmark's own denoising loop (which also decodes x0-predictions) must paint exactly what
    serving's ``generate`` paints for the same seeds, or the early signal would judge other images."""
    from benchmarks.studies.method.sampling import Product, recurrent, request_seeds, single_shot

    from rfad.contract import CLASS_NAMES
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.generate import generate
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.settings import GenerationSettings
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.trainer.data.miniworld import load_generator
    from rfad.trainer.data.fidelity import read_fidelity
    from rfad.trainer.data.scenes import draw_scene

    generator, _ = load_generator(None)
    runner = TorchRunner(generator.models, "cpu", judge=load_judge_models(ModelSet.resolve(tiny_zoo)))
    judge = RunnerJudge(runner)
    scene = draw_scene("Available", np.random.default_rng([3, 1, 0]))
    product = Product("p0", scene.canvas, scene.prompt, scene.caption)
    settings = GenerationSettings(steps=3, guidance_scale=7.5, max_attempts=2)
    shots = single_shot(runner, judge, [product], 2, settings, (0.5,), max_attempts=2)
    assert [s["seed"] for s in shots] == request_seeds(0, 2, 2)
    for shot in shots:
        served = generate(runner, scene.canvas, scene.prompt, GenerationSettings(steps=3, guidance_scale=7.5,
                                                                                  seed=shot["seed"], candidates=1))
        np.testing.assert_array_equal(shot["image"], served.images[0].image)
        assert shot["oracle"] in CLASS_NAMES and 0 <= shot["p_available"] <= 1
        assert shot["fidelity"] == read_fidelity(shot["image"], np.asarray(scene.canvas.product_rgba),
                                                 scene.canvas.product_alpha, scene.prompt)
        assert set(shot["p_available_early"]) == {"0.5"} and 0 <= shot["p_available_early"]["0.5"] <= 1
    loops = recurrent(runner, judge, [product], 1, settings, max_attempts=2)
    assert loops[0]["oracle_first"] == shots[0]["oracle"]  # the loop's first attempt is the single shot
    assert 1 <= loops[0]["attempts"] <= 2


def test_rfnet_training_can_start_from_a_trained_judge(tmp_path):
    """``rfad-train rfnet --init DIR``: the judge the benchmark pretrains on drawn scenes, then fine-tunes."""
    from rfad.models.rfnet import RFNet, tiny_rfnet_config
    from rfad.tiny.tokenizers import build_roberta_tokenizer
    from rfad.trainer.rfnet.train import RFNetTrainConfig, build_model_and_tokenizer

    tokenizer = build_roberta_tokenizer()
    config = tiny_rfnet_config()
    config.roberta["vocab_size"] = len(tokenizer)
    trained = RFNet(config)
    trained.save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    run = RFNetTrainConfig(data="d", out="o", tiny=True, init=str(tmp_path / "judge"), ablate=("depth",)).resolved()
    model, loaded_tokenizer = build_model_and_tokenizer(run)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    assert model.config.ablate == ["depth"] and model.training and len(loaded_tokenizer) == len(tokenizer)
    with pytest.raises(ValueError, match="--init .* image size is 64, not --image-size 128"):
        build_model_and_tokenizer(RFNetTrainConfig(data="d", out="o", tiny=True, init=str(tmp_path / "judge"),
                                                   image_size=128).resolved())
