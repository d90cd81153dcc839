"""A tensor renamed in its spec is renamed everywhere: the exported graphs, the Triton configs and
the calls of all three runners (torch, onnxruntime, Triton) follow, and the images stay what they were.

The rename goes in through export's ``renames`` (the registry's override) and nowhere else:
every consumer reads the names from the specs the export writes.
"""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
from PIL import Image

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.client import RfadClient
from rfad.components.manifest import MANIFEST_FORMAT
from rfad.components.registry import component_specs
from rfad.components.specs import ComponentSpec, ModelFacts
from rfad.export.onnx_export import export_onnx
from rfad.export.triton_config import render_config
from rfad.export.triton_judge import judge_configs
from rfad.export.triton_repo import write_triton_repo
from rfad.models.diffusion import load_diffusion_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.generate import generate
from rfad.pipeline.onnx_runner import OnnxRunner
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.serving.launcher import TritonServer

SIZE = 128
# An input and a per-sample scalar of the merged step, both ends of the VAE decoder, an int64 input.
RENAMES = {
    "text_encoder": {"input_ids": "token_ids"},
    "controlnet_unet": {"sample": "noisy_latents", "conditioning_scale": "control_strength"},
    "vae_decoder": {"latents": "z", "images": "pixels"},
}
# Tensors the rfad_judge ensemble wires between its steps (checked on the configs: re-exporting
# the judge models too would double this module's time).
JUDGE_RENAMES = {
    "depth": {"depth_map": "depth"},
    "rfnet_text": {"attention_mask": "token_mask"},
    "rfnet": {"generated_image": "ad_image", "probabilities": "class_probabilities"},
}
SERVED = ["text_encoder", "controlnet_unet", "vae_encoder", "vae_decoder"]
SETTINGS = GenerationSettings(steps=3, seed=3, max_attempts=1)


@pytest.fixture(scope="session")
def renamed_onnx(tiny_zoo, run_folder):
    """The served diffusion components exported with RENAMES, once per run (both of this module's
    tests that read it are in the slow tier: tests/conftest.py SLOW_FIXTURES)."""
    return run_folder("renamed-onnx", lambda out: export_onnx(ModelSet.resolve(tiny_zoo), out, components=SERVED,
                                                              renames=RENAMES, echo=lambda *_: None))


@pytest.fixture(scope="module")
def repo(renamed_onnx, tmp_path_factory):
    return write_triton_repo(renamed_onnx, tmp_path_factory.mktemp("renamed-repo") / "repo", canvas_size=SIZE)


def _image(runner, product) -> np.ndarray:
    canvas = prepare_canvas(product, CanvasSpec(width=SIZE, height=SIZE))
    return generate(runner, canvas, "a bottle", SETTINGS).images[0].image


def _parsed(text: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _config(path):
    return _parsed(path.read_text())


def test_the_graphs_and_the_triton_configs_carry_the_new_names(renamed_onnx, repo):
    graph = onnx.load(str(renamed_onnx / "controlnet_unet" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["noisy_latents", "timestep", "encoder_hidden_states", "controlnet_cond",
                                             "control_strength"]
    decoder = onnx.load(str(renamed_onnx / "vae_decoder" / "model.onnx")).graph
    assert [i.name for i in decoder.input] == ["z"] and [o.name for o in decoder.output] == ["pixels"]

    merged = {t.name: t for t in _config(repo / "controlnet_unet" / "config.pbtxt").input}
    assert list(merged) == ["noisy_latents", "timestep", "encoder_hidden_states", "controlnet_cond", "control_strength"]
    # The per-sample-scalar rule follows the tensor, whatever it is called: [1] declared, [] to the graph.
    strength = merged["control_strength"]
    assert list(strength.dims) == [1] and strength.HasField("reshape") and list(strength.reshape.shape) == []
    assert [t.name for t in _config(repo / "vae_decoder" / "config.pbtxt").output] == ["pixels"]


def test_the_judge_ensemble_is_wired_by_the_renamed_specs():
    specs = component_specs(ModelFacts(text_dim=32, rfnet_width=16), JUDGE_RENAMES)
    configs = {name: _parsed(render_config(config)) for name, config in judge_configs(specs).items()}
    steps = {step.model_name: step for step in configs["rfad_judge"].ensemble_scheduling.step}
    assert steps["rfnet"].input_map["ad_image"] == steps["depth"].input_map["images"] == "judge_generated_image"
    assert steps["rfnet"].input_map["depth_map"] == steps["depth"].output_map["depth"]
    assert steps["rfnet_text"].input_map["token_mask"] == steps["rfnet"].input_map["caption_mask"]
    # rfnet's output reaches the verdict step and the response under the contract's name.
    assert steps["rfnet"].output_map["class_probabilities"] == "probabilities"
    assert configs["rfad_judge_verdict"].parameters["checks"].string_value == (
        "depth:depth,saliency:saliency_map,rfnet_text:caption_embeddings,rfnet:probabilities")
    # The python steps name their own tensors by role, so their code never sees a rename.
    assert [t.name for t in configs["rfad_judge_prepare"].output] == [
        "generated_image", "product_image", "input_ids", "attention_mask"]


def test_every_runner_makes_the_images_it_made_before_the_rename(tiny_zoo, tiny_onnx, renamed_onnx, repo):
    product = (tiny_zoo / "samples" / "bottle.png").read_bytes()
    models = load_diffusion_models(ModelSet.resolve(tiny_zoo))
    reference = _image(TorchRunner(models), product)
    renamed = TorchRunner(models, renames=RENAMES)  # the torch runner's calls are built from the specs too
    assert renamed.specs["vae_decoder"].output_names == ["pixels"] and renamed.specs["text_encoder"].input_names == [
        "token_ids"]
    assert np.array_equal(_image(renamed, product), reference)
    before = _image(OnnxRunner(tiny_onnx, merged=True), product)
    after = _image(OnnxRunner(renamed_onnx, merged=True), product)
    assert np.array_equal(after, before) and np.abs(after.astype(int) - reference.astype(int)).max() <= 2

    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
        served = RfadClient(server.grpc_url, retries=0).generate(product, "a bottle", seed=3, steps=3, max_attempts=1)
    image = np.asarray(Image.open(io.BytesIO(served.images[0])).convert("RGB"))
    assert np.abs(image.astype(int) - reference.astype(int)).max() <= 2


def test_specs_round_trip_and_take_their_values_by_role_strictly():
    facts = ModelFacts(text_dim=32, down_residuals=((32, 1), (32, 1), (64, 2)), mid_residual=(64, 2), rfnet_width=16,
                       num_classes=7)
    specs = component_specs(facts, {**RENAMES, **JUDGE_RENAMES})
    for spec in specs.values():
        assert ComponentSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert specs["rfnet"].output("probabilities").shape == ("B", 7) and specs["rfnet"].tokens == facts.caption_tokens
    unet = specs["unet"]
    values = {"sample": "s", "timestep": "t", "encoder_hidden_states": "e", "down_res": ["d0", "d1", "d2"], "mid_res": "m"}
    assert [(t.name, v) for t, v in unet.bind(values)] == [
        ("sample", "s"), ("timestep", "t"), ("encoder_hidden_states", "e"), ("down_res_0", "d0"), ("down_res_1", "d1"),
        ("down_res_2", "d2"), ("mid_res", "m")]
    assert specs["controlnet"].unbind(["d0", "d1", "d2", "m"]) == {"down_res": ["d0", "d1", "d2"], "mid_res": "m"}
    with pytest.raises(ValueError, match="down_res takes 3 tensors, got 2"):
        unet.bind({**values, "down_res": ["d0", "d1"]})
    with pytest.raises(ValueError, match=r"inputs \['mid_res'\] missing, \['noise'\] unknown"):
        unet.bind({**{k: v for k, v in values.items() if k != "mid_res"}, "noise": "n"})
    with pytest.raises(ValueError):
        specs["controlnet"].unbind(["d0", "d1", "d2"])
    with pytest.raises(ValueError, match=r"no tensors \['nope'\] to rename"):
        component_specs(facts, {"unet": {"nope": "x"}})
    with pytest.raises(ValueError, match=r"tensor names \['timestep'\] are used twice"):
        component_specs(facts, {"unet": {"sample": "timestep"}})


def test_component_modules_and_the_component_registry_must_agree():
    from rfad.components.modules import MODULES, check_modules

    check_modules()
    with pytest.raises(RuntimeError, match=r"components without a module \['unet'\]"):
        check_modules({name: build for name, build in MODULES.items() if name != "unet"})
    with pytest.raises(RuntimeError, match=r"modules without a component \['sharpener'\]"):
        check_modules({**MODULES, "sharpener": MODULES["unet"]})


def test_an_export_of_the_old_manifest_format_is_refused_in_one_line(tiny_onnx, tmp_path):
    from click.testing import CliRunner

    from rfad.export.cli import main as export_cli

    manifest = json.loads((tiny_onnx / "manifest.json").read_text())
    del manifest["format"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"has format 1, this rfad reads format {MANIFEST_FORMAT}: re-export with "
                                         "`rfad-export onnx`"):
        OnnxRunner(tmp_path)
    result = CliRunner().invoke(export_cli, ["triton-repo", "--onnx", str(tmp_path), "--out", str(tmp_path / "repo")])
    assert result.exit_code == 1 and "re-export with `rfad-export onnx`" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "repo").exists()
