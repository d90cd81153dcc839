"""``rfad-train miniworld`` for a few steps on a few scenes: the folder it writes loads, hashes as recorded and
is the same for the same seed. (The shipped generator's full training is not re-run here.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rfad.miniworld import RECORD_FILE, file_hashes, training_record

FEW_STEPS = ["--scenes", "10", "--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "3", "--unet-batch", "2",
             "--controlnet-steps", "2", "--controlnet-batch", "2", "--check-per-class", "1", "--log-every", "1",
             "--threads", "2"]


def _train(out, *extra):
    from rfad.trainer.cli import main

    result = CliRunner().invoke(main, ["miniworld", "--out", str(out), *FEW_STEPS, *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("miniworld") / "model"
    _train(out)
    return out


def test_training_writes_a_model_set_every_command_loads(trained):
    from rfad.canvas import prepare_canvas
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.generate import generate
    from rfad.pipeline.settings import GenerationSettings
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.trainer.data.scenes import draw_scene

    model_set = ModelSet.resolve(trained)
    assert model_set.sd == (trained / "sd15").resolve() and model_set.controlnet == (trained / "controlnet").resolve()
    models = load_diffusion_models(model_set)
    assert models.unet.config.in_channels == 4 and models.unet.config.sample_size == 16
    assert 2 ** (len(models.vae.config.block_out_channels) - 1) == 8
    scene = draw_scene("Available", np.random.default_rng(0))
    canvas = prepare_canvas(scene.product, MINIWORLD_CANVAS)
    result = generate(TorchRunner(models), canvas, scene.prompt, GenerationSettings(steps=2, guidance_scale=3.0))
    image = result.images[0].image
    assert image.shape == (128, 128, 3)
    solid = canvas.product_alpha == 255
    assert np.array_equal(image[solid], canvas.product_rgb[solid])  # the product pasted back exactly


def test_training_record_has_losses_settings_and_the_hash_of_every_file(trained):
    record = training_record(trained)
    assert record["files"] == file_hashes(trained)
    weights = [path for path in record["files"] if path.endswith(".safetensors")]
    assert sorted(weights) == ["controlnet/diffusion_pytorch_model.safetensors", "sd15/text_encoder/model.safetensors",
                               "sd15/unet/diffusion_pytorch_model.safetensors",
                               "sd15/vae/diffusion_pytorch_model.safetensors"]
    assert record["seed"] == 0 and record["settings"]["unet_steps"] == 3 and record["settings"]["scenes"] == 10
    for phase, steps in (("vae", 2), ("unet", 3), ("controlnet", 2)):
        curve = record["losses"][phase]["curve"]
        assert [point["step"] for point in curve] == list(range(1, steps + 1))
        assert all(np.isfinite(point["loss"]) and point["loss"] > 0 for point in curve)
        assert record["losses"][phase]["seconds"] > 0
    assert sum(record["scenes"]["labels"].values()) == 10
    assert set(record["vae"]["reconstruction_check"]["per_class"]) == {
        "Available", "Space Mismatch", "Size Mismatch", "Indistinctiveness", "Shape Hallucination"}
    scaling = json.loads((trained / "sd15" / "vae" / "config.json").read_text())["scaling_factor"]
    assert scaling == pytest.approx(record["vae"]["scaling_factor"], rel=1e-5)
    assert record["wall_minutes"] > 0 and record["weights_mb"] > 1


def test_training_is_reproducible_for_a_seed_and_changes_with_it(trained, tmp_path):
    _train(tmp_path / "again")
    assert file_hashes(tmp_path / "again") == file_hashes(trained)
    _train(tmp_path / "other", "--seed", "1")
    other = file_hashes(tmp_path / "other")
    assert other["sd15/unet/diffusion_pytorch_model.safetensors"] != \
        file_hashes(trained)["sd15/unet/diffusion_pytorch_model.safetensors"]


@pytest.mark.parametrize("flag, value, message", [
    ("--vae-crop", "60", "vae crop: must be a multiple of 8"),
    ("--unet-channels", "32,44", "multiple of 8"),
    ("--norm-groups", "12", "norm-groups: 12 does not divide every width"),
    ("--available-share", "1.5", "not in the range"),
])
def test_bad_settings_are_one_line_errors(tmp_path, flag, value, message):
    from rfad.trainer.cli import main

    result = CliRunner().invoke(main, ["miniworld", "--out", str(tmp_path / "m"), *FEW_STEPS, flag, value])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "m" / RECORD_FILE).exists()
