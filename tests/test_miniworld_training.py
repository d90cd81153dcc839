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
    assert models.unet.config.in_channels == 4 and models.unet.config.sample_size == 32  # the default: factor 4
    assert 2 ** (len(models.vae.config.block_out_channels) - 1) == 4
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


def test_a_run_split_into_parts_resumes_to_the_same_weights(trained, tmp_path):
    """--stop-after keeps each finished phase in OUT.stages; the same command then resumes after the last one
    and writes the same model set as one uninterrupted run, and removes the stages."""
    from rfad.trainer.miniworld.stages import stages_folder

    out = tmp_path / "parts"
    _train(out, "--stop-after", "vae")
    stage = stages_folder(out) / "vae" / "stage.json"
    assert not out.exists() and stage.is_file()
    # The kept VAE's oracle check is measured again on resuming (the oracle's rules may have changed since):
    # a stale check in the stage does not reach the record.
    kept = json.loads(stage.read_text())
    kept["reconstruction_check"]["per_class"] = {name: -1.0 for name in kept["reconstruction_check"]["per_class"]}
    stage.write_text(json.dumps(kept))
    second = _train(out, "--stop-after", "unet")
    assert "VAE: kept in" in second.output and (stages_folder(out) / "unet" / "stage.json").is_file()
    last = _train(out)
    assert "UNet: kept in" in last.output and not stages_folder(out).exists()
    assert file_hashes(out) == file_hashes(trained)
    record = training_record(out)
    assert record["resumed_phases"] == ["vae", "unet"]
    assert record["losses"]["vae"]["curve"] == training_record(trained)["losses"]["vae"]["curve"]
    assert record["vae"]["reconstruction_check"] == training_record(trained)["vae"]["reconstruction_check"]


def test_a_phase_stopped_midway_resumes_from_its_checkpoint_to_the_same_weights(trained, tmp_path, monkeypatch):
    """Stopped inside each phase in turn (after its step-2 or step-1 checkpoint), the same command resumes
    there and ends in the uninterrupted run's weights and loss curves; a checkpoint made under other
    settings is refused."""
    from rfad.trainer.cli import main
    from rfad.trainer.miniworld.progress import PhaseCheckpoints
    from rfad.trainer.miniworld.stages import stages_folder

    after_step = PhaseCheckpoints.after_step

    def stop_at(phase: str, step: int):
        def stopping(self, steps_taken, total, state, extra):
            after_step(self, steps_taken, total, state, extra)
            if self.phase == phase and steps_taken == step:
                raise RuntimeError(f"stopped in {phase} at {step}")
        monkeypatch.setattr(PhaseCheckpoints, "after_step", stopping)

    out = tmp_path / "m"
    flags = ["miniworld", "--out", str(out), *FEW_STEPS, "--checkpoint-every", "1"]
    for phase, step in (("vae", 1), ("unet", 2), ("controlnet", 1)):
        stop_at(phase, step)
        stopped = CliRunner().invoke(main, flags)
        assert isinstance(stopped.exception, RuntimeError) and f"stopped in {phase}" in str(stopped.exception)
        assert (stages_folder(out) / f"{phase}.step{step}" / "progress.json").is_file()
        if phase == "unet":
            lr = CliRunner().invoke(main, [*flags, "--unet-lr", "0.01"])
            assert lr.exit_code != 0 and "phase in progress was trained under other settings (unet_lr" in lr.output
        monkeypatch.undo()
        if phase != "controlnet":
            resumed = CliRunner().invoke(main, [*flags, "--stop-after", phase])
            assert resumed.exit_code == 0 and f"{phase}: resumed at step {step}" in resumed.output, resumed.output
            assert not list(stages_folder(out).glob(f"{phase}.step*"))  # the kept phase replaces its checkpoints
    last = CliRunner().invoke(main, flags)
    assert last.exit_code == 0 and "controlnet: resumed at step 1" in last.output, last.output
    assert file_hashes(out) == file_hashes(trained) and not stages_folder(out).exists()
    for phase in ("vae", "unet", "controlnet"):
        assert training_record(out)["losses"][phase]["curve"] == training_record(trained)["losses"][phase]["curve"]


def test_a_kept_phase_made_under_other_settings_is_refused(tmp_path):
    """A phase is compared on the settings it (and the phases before it) read: a kept VAE serves a run with
    more UNet steps, and is refused by one with another VAE learning rate."""
    from dataclasses import fields

    from rfad.trainer.cli import main
    from rfad.trainer.miniworld.config import MiniworldTrainConfig
    from rfad.trainer.miniworld.stages import NOT_COMPARED, PHASE_SETTINGS

    # Every setting is declared: compared for a kept phase, or read by nothing that is kept.
    assert {f.name for f in fields(MiniworldTrainConfig)} == set(PHASE_SETTINGS["controlnet"]) | set(NOT_COMPARED)
    out = tmp_path / "m"
    _train(out, "--stop-after", "vae")
    more_unet = [flag if flag != "3" or previous != "--unet-steps" else "4"
                 for previous, flag in zip([""] + FEW_STEPS, FEW_STEPS)]
    reused = CliRunner().invoke(main, ["miniworld", "--out", str(out), *more_unet, "--stop-after", "vae"])
    assert reused.exit_code == 0 and "VAE: kept in" in reused.output, reused.output
    result = CliRunner().invoke(main, ["miniworld", "--out", str(out), *FEW_STEPS, "--vae-lr", "0.01"])
    assert result.exit_code != 0
    assert "trained under other settings (vae_lr 0.001 -> 0.01)" in result.output and "delete" in result.output
    assert not out.exists()


def test_a_factor_8_vae_gives_16_pixel_latents_that_the_loop_generates_from(tmp_path):
    """--vae-channels with 4 blocks (SD-1.5's latent factor 8; the default is 3 blocks, factor 4): 16 x 16
    latents at 128 px; the UNet, the ControlNet's conditioning embedding, the generation loop and the ONNX
    export (its specs' latent shapes) follow it."""
    from rfad.canvas import prepare_canvas
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.generate import generate
    from rfad.pipeline.settings import GenerationSettings
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.trainer.data.scenes import draw_scene

    out = tmp_path / "f8"
    _train(out, "--vae-channels", "32,32,64,64", "--unet-channels", "32,64")
    models = load_diffusion_models(ModelSet.resolve(out))
    assert 2 ** (len(models.vae.config.block_out_channels) - 1) == 8
    assert models.unet.config.sample_size == 16 and training_record(out)["vae"]["latent_factor"] == 8
    scene = draw_scene("Available", np.random.default_rng(0))
    canvas = prepare_canvas(scene.product, MINIWORLD_CANVAS)
    settings = GenerationSettings(steps=2, guidance_scale=3.0)
    result = generate(TorchRunner(models), canvas, scene.prompt, settings)
    assert result.images[0].image.shape == (128, 128, 3)

    from rfad.export.onnx_export import export_onnx
    from rfad.pipeline.onnx_runner import OnnxRunner

    manifest = export_onnx(ModelSet.resolve(out), tmp_path / "onnx", served="merged", echo=lambda *_: None)
    assert manifest.vae_scale_factor == 8
    exported = generate(OnnxRunner(tmp_path / "onnx", merged=True), canvas, scene.prompt, settings)
    assert np.abs(exported.images[0].image.astype(int) - result.images[0].image.astype(int)).max() <= 2


@pytest.mark.parametrize("flag, value, message", [
    ("--vae-crop", "60", "vae crop: must be a multiple of 8"),
    ("--unet-channels", "32,44", "multiple of 8"),
    ("--norm-groups", "12", "norm-groups: 12 does not divide every width"),
    ("--available-share", "1.5", "not in the range"),
    ("--vae-channels", "32,32,64,64,64", "vae-channels: 2 to 4 blocks"),
])
def test_bad_settings_are_one_line_errors(tmp_path, flag, value, message):
    from rfad.trainer.cli import main

    result = CliRunner().invoke(main, ["miniworld", "--out", str(tmp_path / "m"), *FEW_STEPS, flag, value])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "m" / RECORD_FILE).exists()


def test_rfad_train_maps_writes_map_models_the_judge_loads(trained, tmp_path):
    """`rfad-train maps` on a few scenes through the generator's VAE: the DPT and U2-Net folders load
    through the judge's own estimators and map an image to [0, 1]; the record hashes the files and
    holds the held-out check before and after training."""
    import torch

    from rfad.models.maps import DepthEstimator, SaliencyEstimator
    from rfad.trainer.cli import main

    out = tmp_path / "maps"
    result = CliRunner().invoke(main, ["maps", "--out", str(out), "--models", str(trained), "--scenes", "6",
                                       "--steps", "3", "--batch", "2", "--check", "4", "--size", "64",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    images = torch.rand(2, 3, 64, 64)
    for estimator in (DepthEstimator.from_pretrained(out / "dpt"), SaliencyEstimator.from_pretrained(out / "u2net")):
        with torch.no_grad():
            maps = estimator(images)
        assert maps.shape == (2, 1, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) <= 1
        # Not a flat map: a depth model whose last ReLU is dead outputs 0 everywhere and carries no signal.
        assert float(maps.amax(dim=(1, 2, 3)).min()) == pytest.approx(1.0) and float(maps.std()) > 0.05
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["command"] == "rfad-train maps" and record["files"] == file_hashes(out)
    assert set(record["check"]) == {"untrained", "trained"} and record["curve"][-1]["step"] == 3
    bad = CliRunner().invoke(main, ["maps", "--out", str(tmp_path / "bad"), "--size", "60"])
    assert bad.exit_code != 0 and "--size 60" in bad.output


def test_the_maps_depth_truth_is_scaled_per_image_as_the_served_map_is(trained):
    """The served DepthEstimator scales every map to [0, 1]; the truth it learns from is scaled the same way,
    or a scene without a table (nearest point 0.2) would ask for a map it can never output."""
    from rfad.trainer.data.miniworld import load_generator
    from rfad.trainer.data.scenes import draw_scene
    from rfad.trainer.miniworld.maps import MAP_STREAM, decoded_scenes

    runner, _ = load_generator(trained)
    _, _, depth = decoded_scenes(runner, 10, seed=0, stream=MAP_STREAM)
    assert np.allclose(depth.min(axis=(1, 2)), 0.0) and np.allclose(depth.max(axis=(1, 2)), 1.0)
    no_table = next(scene for scene in (draw_scene("Space Mismatch", np.random.default_rng([9, i])) for i in range(50))
                    if scene.params["variant"] == "no support")
    assert no_table.depth().max() == pytest.approx(0.2)


def test_rfad_train_decoder_changes_the_decoder_only_and_records_the_check(trained, tmp_path):
    """`rfad-train decoder` copies the set, fine-tunes its VAE decoder with the encoder frozen (so the
    diffusion models' latents do not change), and records the oracle's reconstruction check."""
    from safetensors.torch import load_file

    from rfad.trainer.cli import main

    out = tmp_path / "sharper"
    result = CliRunner().invoke(main, ["decoder", "--models", str(trained), "--out", str(out), "--steps", "2",
                                       "--batch", "2", "--crop", "16", "--check-per-class", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    [weights] = (trained / "sd15" / "vae").glob("*.safetensors")
    before, after = load_file(weights), load_file(out / "sd15" / "vae" / weights.name)
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in encoder)
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in decoder)
    record = json.loads((out / RECORD_FILE).read_text())
    section = record["decoder_finetune"]
    assert section["losses"][-1]["step"] == 2 and set(section["reconstruction_check"]) == {"before", "after"}
    assert record["files"] == file_hashes(out)
    again = CliRunner().invoke(main, ["decoder", "--models", str(trained), "--out", str(out), "--steps", "1"])
    assert again.exit_code != 0 and "exists" in again.output
