"""ONNX export of every component (tiny zoo): parity at two shapes, runners agree, clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.components.registry import component_specs
from rfad.components.specs import ModelFacts
from rfad.export.cli import main as export_cli
from rfad.export.trt import engine_profiles
from rfad.models.diffusion import load_diffusion_models
from rfad.models.judge import load_judge_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.generate import generate
from rfad.pipeline.judge import RunnerJudge
from rfad.pipeline.onnx_runner import OnnxRunner
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.tiny.products import draw_product

ALL = {"text_encoder", "controlnet", "unet", "controlnet_unet", "vae_encoder", "vae_decoder", "depth", "saliency",
       "rfnet_text", "rfnet"}


def test_every_component_exports_with_dynamic_axes_and_parity(tiny_onnx):
    manifest = json.loads((tiny_onnx / "manifest.json").read_text())
    assert set(manifest["components"]) == ALL
    parity = json.loads((tiny_onnx / "parity.json").read_text())["rows"]
    assert {row["component"] for row in parity} == ALL and all(row["ok"] for row in parity)
    shapes = {(row["component"], tuple(row["shape"])) for row in parity}
    # Two shapes per output: another batch, then a non-square image.
    assert ("vae_decoder", (3, 3, 64, 64)) in shapes and ("vae_decoder", (1, 3, 64, 80)) in shapes
    graph = onnx.load(str(tiny_onnx / "unet" / "model.onnx"))
    sample = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in sample] == ["B", 9 - 5, "h", "w"]


def test_onnx_runner_reproduces_the_torch_runner(tiny_zoo, tiny_onnx):
    model_set = ModelSet.resolve(tiny_zoo)
    torch_runner = TorchRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))
    canvas = prepare_canvas(draw_product("box", 60, 70), CanvasSpec(width=128, height=96))  # non-square
    settings = GenerationSettings(steps=3, seed=4, candidates=2, max_attempts=1, threshold=0.0)
    latents = torch.randn((2, 4, 12, 16), generator=torch.Generator().manual_seed(0))
    reference = generate(torch_runner, canvas, "a box", settings, caption="green box", judge=RunnerJudge(torch_runner),
                         latents=latents)
    for merged in (False, True):
        runner = OnnxRunner(tiny_onnx, merged=merged)
        result = generate(runner, canvas, "a box", settings, caption="green box", judge=RunnerJudge(runner),
                          latents=latents)
        for ours, theirs in zip(result.candidates, reference.candidates):
            assert np.abs(ours.image.astype(int) - theirs.image.astype(int)).max() <= 2
            assert np.allclose(ours.probabilities, theirs.probabilities, atol=1e-4)
    # A runner built from an export (as the served pipeline builds its own) imports neither
    # transformers nor diffusers: its tokenizers are read with the tokenizers library alone.
    probe = ("import sys; from rfad.pipeline.onnx_runner import OnnxRunner; from rfad.pipeline.request import "
             f"encode_prompts; encode_prompts(OnnxRunner({str(tiny_onnx)!r}, merged=True), 'a box'); "
             "print(sorted({'transformers', 'diffusers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_missing_or_corrupt_inputs_are_clear_errors(tiny_zoo, tiny_onnx, tmp_path):
    import shutil

    result = CliRunner().invoke(export_cli, ["onnx", "--models", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "neither a model set" in result.output
    # A truncated weights file: one line naming the component and the folder, no traceback.
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    weights = zoo / "sd15" / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4000])
    result = CliRunner().invoke(export_cli, ["onnx", "--models", str(zoo), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "base model VAE" in result.output and str(weights.parent) in result.output
    assert "Traceback" not in result.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((tiny_onnx / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError, match="text_encoder/model.onnx is missing"):
        OnnxRunner(broken)
    (broken / "text_encoder").mkdir()
    (broken / "text_encoder" / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="cannot be loaded"):
        OnnxRunner(broken)


def test_trt_without_gpu_exits_2_with_one_line(tiny_onnx, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the engine build test below covers this machine")
    result = CliRunner().invoke(export_cli, ["trt", "--onnx", str(tiny_onnx), "--engines", str(tmp_path / "e")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and ("TensorRT" in result.output or "GPU" in result.output)


def test_tensorrt_profiles_cover_512_and_768():
    facts = ModelFacts(text_dim=768, down_residuals=((320, 1),) * 3 + ((320, 2),), mid_residual=(1280, 8))
    profiles = dict((name, (lo, opt, hi)) for name, lo, opt, hi in
                    engine_profiles(component_specs(facts)["controlnet_unet"], (1, 2, 16), (256, 512, 768)))
    lo, opt, hi = profiles["sample"]
    assert lo == (1, 4, 32, 32) and opt == (2, 4, 64, 64) and hi == (16, 4, 96, 96)
    assert profiles["controlnet_cond"][2] == (16, 3, 768, 768)
    for low, mid, high in profiles.values():
        assert all(a <= b <= c for a, b, c in zip(low, mid, high))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines need a CUDA GPU")
def test_engines_build_on_gpu(tiny_onnx, tmp_path):
    from rfad.export.trt import build_engines

    record = build_engines(tiny_onnx, tmp_path, fp16=True, batch=(1, 2, 4), image=(64, 128, 256))
    assert set(record["engines"]) == ALL and all((tmp_path / f"{n}.plan").is_file() for n in ALL)


def test_generate_cli_with_the_onnx_runner_matches_torch(tiny_zoo, tiny_onnx, product_png, tmp_path):
    from PIL import Image

    from rfad.app.cli import main as rfad_cli

    common = ["generate", "--product", str(product_png), "--prompt", "a bottle", "--steps", "2", "--size", "128",
              "--seed", "9", "--max-attempts", "1"]
    onnx = ["--runner", "onnx", "--onnx", str(tiny_onnx)]
    cli = CliRunner()
    assert cli.invoke(rfad_cli, common + ["--models", str(tiny_zoo), "--out", str(tmp_path / "t.png")]).exit_code == 0
    result = cli.invoke(rfad_cli, common + ["--out", str(tmp_path / "o.png"), *onnx])
    assert result.exit_code == 0, result.output
    # The sidecar records what ran: the ONNX folder and its manifest, not a model set.
    sidecar = json.loads((tmp_path / "o.json").read_text())
    manifest = json.loads((tiny_onnx / "manifest.json").read_text())
    assert sidecar["runner"] == "onnx" and "models" not in sidecar and sidecar["judged"]
    assert sidecar["onnx"]["folder"] == str(tiny_onnx.resolve()) and sidecar["onnx"]["precision"] == "fp32"
    assert sidecar["onnx"]["facts"] == manifest["facts"] and sidecar["onnx"]["models"] == manifest["models"]
    a, b = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in ("t.png", "o.png"))
    assert np.abs(a - b).max() <= 2
    # Flags the onnx runner cannot honour are refused, named, in one line; nothing is written.
    for extra, named in ((["--models", str(tiny_zoo)], "--models"), (["--rfnet", str(tiny_zoo / "rfnet")], "--rfnet"),
                         (["--lora-scale", "0.5"], "--lora-scale"), (["--device", "cuda"], "--device cuda")):
        result = cli.invoke(rfad_cli, common + ["--out", str(tmp_path / "x.png"), *onnx, *extra])
        assert result.exit_code == 1 and named in result.output and "--runner onnx" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()
    result = cli.invoke(rfad_cli, common + ["--out", str(tmp_path / "x.png"), "--onnx", str(tiny_onnx),
                                            "--models", str(tiny_zoo)])
    assert result.exit_code == 1 and "--onnx is read by --runner onnx only" in result.output
    result = cli.invoke(rfad_cli, common + ["--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "--runner torch needs --models" in result.output


def _graph_bytes(folder):
    """A graph's bytes as one inline file would hold them: model.onnx's own bytes and the length of
    each weight in its external data (not the data file's size, which page-aligns every weight)."""
    from onnx.external_data_helper import uses_external_data

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    return graph.ByteSize() + sum(int(next(e.value for e in t.external_data if e.key == "length"))
                                  for t in graph.graph.initializer if uses_external_data(t))


def test_fp16_export_has_fp16_weights_float32_io_and_runs_the_loop(tiny_zoo, tiny_onnx, tiny_onnx_fp16):
    from onnx import TensorProto

    from rfad.components.manifest import ExportManifest

    components = ["text_encoder", "controlnet_unet", "vae_encoder", "vae_decoder", "rfnet"]
    manifest = ExportManifest.read(tiny_onnx_fp16 / "manifest.json", "the fp16 export")
    assert manifest.precision == "fp16"
    # Exported with served="merged" (`--unet merged`): what that repository serves, nothing else.
    assert list(manifest.specs) == [name for name in ExportManifest.read(tiny_onnx / "manifest.json", "fp32").specs
                                    if name not in ("controlnet", "unet")]
    assert not (tiny_onnx_fp16 / "unet").exists() and not (tiny_onnx_fp16 / "controlnet").exists()
    parity = json.loads((tiny_onnx_fp16 / "parity.json").read_text())
    assert parity["precision"] == "fp16" and all(row["ok"] for row in parity["rows"])
    # Each output is also measured against PyTorch's own float16 run (the tolerance's second term).
    assert all(row["torch_fp16_diff"] is not None and np.isfinite(row["torch_fp16_diff"])
               and row["tolerance"] >= row["fixed_tolerance"] for row in parity["rows"])
    for name in components:
        # Without its external data: onnx refuses a data file with several hard links, and the
        # repositories other tests write from the session's export link its files.
        graph = onnx.load(str(tiny_onnx_fp16 / name / "model.onnx"), load_external_data=False)
        weights = [t for t in graph.graph.initializer if len(t.dims) and np.prod(t.dims) >= 16]
        assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights if len(t.dims) > 1), name
        # Same interface as the fp32 graphs: the specs, runners and Triton configs do not change.
        for value in list(graph.graph.input) + list(graph.graph.output):
            assert value.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT64), (name, value.name)
        assert _graph_bytes(tiny_onnx_fp16 / name) < 0.7 * _graph_bytes(tiny_onnx / name), name

    # The whole loop over the fp16 graphs stays within 2/255 of PyTorch in fp32.
    model_set = ModelSet.resolve(tiny_zoo)
    torch_runner = TorchRunner(load_diffusion_models(model_set))
    canvas = prepare_canvas(draw_product("box", 60, 70), CanvasSpec(width=128, height=96))
    settings = GenerationSettings(steps=3, seed=4, candidates=2)
    reference = generate(torch_runner, canvas, "a box", settings)
    ours = generate(OnnxRunner(tiny_onnx_fp16, merged=True), canvas, "a box", settings)
    for a, b in zip(ours.candidates, reference.candidates):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


def test_check_compares_one_component_and_catches_a_changed_graph(tiny_zoo, tiny_onnx, tmp_path):
    import shutil

    from onnx import numpy_helper

    cli = CliRunner()
    common = ["check", "--models", str(tiny_zoo), "--component", "unet", "--height", "64", "--width", "96",
              "--batch", "3"]
    result = cli.invoke(export_cli, common + ["--onnx", str(tiny_onnx), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "onnxruntime-fp32" in result.output
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["passed"] and report["rows"][0]["shape"] == [3, 4, 8, 12]
    assert 0 < report["rows"][0]["max_abs_diff"] < 1e-4

    # One UNet weight nudged in the graph: the comparison fails, with exit code 1.
    changed = tmp_path / "changed"
    shutil.copytree(tiny_onnx, changed)
    graph = onnx.load(str(changed / "unet" / "model.onnx"))
    weight = next(t for t in graph.graph.initializer if len(t.dims) == 4 and t.dims[0] >= 32)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.05, weight.name))
    onnx.save(graph, str(changed / "unet" / "model.onnx"))
    result = cli.invoke(export_cli, common + ["--onnx", str(changed)])
    assert result.exit_code == 1 and "FAILED" in result.output

    result = cli.invoke(export_cli, ["check", "--models", str(tiny_zoo), "--onnx", str(tiny_onnx), "--component", "nope"])
    assert result.exit_code == 1 and "'nope'" in result.output and "controlnet_unet" in result.output
    result = cli.invoke(export_cli, common[:-2] + ["--onnx", str(tiny_onnx), "--height", "60"])
    assert result.exit_code == 1 and "multiples of" in result.output
    if not torch.cuda.is_available():
        result = cli.invoke(export_cli, common + ["--onnx", str(tiny_onnx), "--engines", str(tmp_path)])
        assert result.exit_code == 2 and ("TensorRT" in result.output or "GPU" in result.output)


def test_triton_repo_component_configs_take_the_pipelines_largest_batch(tiny_onnx, tmp_path):
    from rfad.contract import MAX_COMPONENT_BATCH
    from rfad.export.triton_repo import write_triton_repo

    repo = write_triton_repo(tiny_onnx, tmp_path / "repo")
    config = (repo / "controlnet_unet" / "config.pbtxt").read_text()
    assert MAX_COMPONENT_BATCH == 16 and "max_batch_size: 16" in config
    assert 'key: "precision"' in config and 'string_value: "fp32"' in config
    with pytest.raises(ValueError, match="--max-batch 8"):
        write_triton_repo(tiny_onnx, tmp_path / "small", max_batch_size=8)


def test_triton_repo_writes_the_pipeline_parameters_and_refuses_bad_ones(tiny_onnx, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from rfad.export.triton_repo import write_triton_repo
    from rfad.serving.pipeline_parameters import PipelineParameters

    repo = write_triton_repo(tiny_onnx, tmp_path / "repo", canvas_size=128)
    config = text_format.Parse((repo / "rfad_pipeline" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    written = PipelineParameters.from_config({k: v.string_value for k, v in config.parameters.items()})
    # The judge components were exported: the default judge mode, and the defaults of the rest.
    assert written == PipelineParameters(canvas_size=128)
    for options, flag in (({"canvas_size": 100}, "--canvas-size: 100"), ({"max_attempts_cap": 3}, "--max-attempts-cap: 3"),
                          ({"pipeline_judge": "ensamble"}, "--pipeline-judge: 'ensamble'")):
        with pytest.raises(ValueError, match=flag):
            write_triton_repo(tiny_onnx, tmp_path / "bad", **options)
        assert not (tmp_path / "bad").exists()


def test_triton_repo_links_the_graphs_rather_than_copying_them(tiny_onnx, tmp_path):
    from rfad.export.triton_repo import write_triton_repo

    repo = write_triton_repo(tiny_onnx, tmp_path / "separate", unet_mode="separate")
    # Same file system: the served graph is the export's file (GBs at SD-1.5 sizes), not a copy.
    assert os.stat(repo / "unet" / "1" / "model.onnx").st_ino == os.stat(tiny_onnx / "unet" / "model.onnx").st_ino


def test_fp16_conversion_can_keep_op_types_in_float32(tiny_onnx, tmp_path):
    """benchmarks/studies/sd15/fp16_ops.py's variants: the listed op types compute in float32 (the converter casts their
    inputs up), everything else in float16, and the graph still runs and matches the fp32 one."""
    import numpy as np
    import onnx
    from onnx import TensorProto

    from rfad.components.manifest import ExportManifest
    from rfad.export.graph_files import convert_to_fp16, open_graph, write_graph
    from rfad.components.samples import check_side, sample_inputs
    from rfad.onnx_session import open_session

    spec = ExportManifest.read(tiny_onnx / "manifest.json", "onnx").specs["controlnet"]
    source = tiny_onnx / "controlnet" / "model.onnx"
    model, sources = open_graph(source)
    target = tmp_path / "model.onnx"
    write_graph(convert_to_fp16(model, ("Softmax",)), sources, target, external=False)
    graph = onnx.load(str(target))
    casts = {n.output[0]: n for n in graph.graph.node if n.op_type == "Cast"}
    softmax = [n for n in graph.graph.node if n.op_type == "Softmax"]
    assert softmax and all(casts[n.input[0]].attribute[0].i == TensorProto.FLOAT for n in softmax)
    assert any(n.op_type == "Conv" for n in graph.graph.node) and any(
        t.data_type == TensorProto.FLOAT16 for t in graph.graph.initializer)  # the rest is float16
    side = check_side(ExportManifest.read(tiny_onnx / "manifest.json", "onnx").facts)
    feed = sample_inputs(spec, 1, side, side)
    reference = open_session(source, "fp32").run(spec.output_names, feed)
    for got, ref in zip(open_session(target, "fp16").run(spec.output_names, feed), reference, strict=True):
        assert np.abs(got.astype(np.float32) - ref).max() <= 1e-2 * max(1.0, np.abs(ref).max())


def test_fp16_tolerance_widens_to_pytorch_own_float16_loss_and_only_for_fp16():
    from rfad.export.parity import tolerance_of
    from rfad.export.tolerances import FP16_REFERENCE_MARGIN, PARITY_TOLERANCE

    reference = np.array([[4.0, -2.0]], np.float32)
    fixed = PARITY_TOLERANCE["fp16"] * 4.0
    assert tolerance_of(reference, "fp16") == pytest.approx(fixed)
    close = reference + np.float32(fixed / 10)  # float16 costs less than the fixed tolerance: it stands
    assert tolerance_of(reference, "fp16", close) == pytest.approx(fixed)
    far = reference + np.float32(0.5)
    assert tolerance_of(reference, "fp16", far) == pytest.approx(FP16_REFERENCE_MARGIN * 0.5)
    assert tolerance_of(reference, "fp32", far) == pytest.approx(PARITY_TOLERANCE["fp32"] * 4.0)
    # An overflowing float16 run says nothing about the conversion: the fixed tolerance stands.
    assert tolerance_of(reference, "fp16", np.array([[np.inf, 0.0]], np.float32)) == pytest.approx(fixed)


def test_fp16_parity_still_catches_a_changed_graph(tiny_zoo, tmp_path):
    """The fp16 check's widened tolerance accepts the converted graph and rejects it once the last
    convolution's kernel is off by 10 % (a conversion error); tiny VAE decoder, PyTorch float16 references."""
    from onnx import numpy_helper

    from rfad.export.onnx_export import export_component
    from rfad.components.modules import model_facts
    from rfad.export.onnx_steps import component_graphs, load_models
    from rfad.export.parity import compare_with_references, half_reference_cases, reference_cases

    diffusion, _ = load_models(ModelSet.resolve(tiny_zoo), ("diffusion",))
    facts = model_facts(diffusion)
    spec = component_specs(facts)["vae_decoder"]
    graph = component_graphs(diffusion)["vae_decoder"]
    path = tmp_path / "vae_decoder" / "model.onnx"
    export_component(graph, spec, path, facts, 17, 2 * 1024**3, 300, fp16=True)
    cases = reference_cases(graph, spec, facts, 300)
    cases.update(half_reference_cases(graph, spec, cases))
    assert any("/half/" in key for key in cases)
    rows = compare_with_references(spec, path, cases, "fp16")
    assert rows and all(row["ok"] and row["torch_fp16_diff"] > 0 for row in rows)

    model = onnx.load(str(path))
    # The last convolution's kernel: no normalisation after it absorbs the change.
    last_conv = [node for node in model.graph.node if node.op_type == "Conv"][-1]
    weight = next(t for t in model.graph.initializer if t.name == last_conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float16(1.1), weight.name))
    onnx.save(model, str(path))
    rows = compare_with_references(spec, path, cases, "fp16")
    assert not all(row["ok"] for row in rows)


def test_a_module_without_a_float16_kernel_is_recorded_and_any_other_error_raised():
    """PyTorch's own float16 run: a missing float16 CPU kernel is a stated reason (parity.json's
    torch_fp16_missing), not a silent skip; any other error of that run stops the export."""
    import torch

    from rfad.components.specs import ModelFacts
    from rfad.components.registry import component_specs
    from rfad.export.parity import NO_HALF, half_reference_cases

    spec = component_specs(ModelFacts(text_dim=32))["vae_decoder"]
    cases = {"0/in/latents": np.zeros((1, 4, 8, 8), np.float32)}

    class Raising(torch.nn.Module):
        def __init__(self, message: str):
            super().__init__()
            self.message = message

        def forward(self, latents):
            raise RuntimeError(self.message)

    missing = half_reference_cases(Raising('"slow_conv2d_cpu" not implemented for \'Half\''), spec, cases)
    assert list(missing) == [NO_HALF] and "no float16 CPU kernel" in str(missing[NO_HALF])
    with pytest.raises(RuntimeError, match="shape mismatch"):
        half_reference_cases(Raising("shape mismatch"), spec, cases)


def test_served_components_are_what_each_unet_mode_serves_in_export_order():
    from rfad.components.registry import COMPONENTS, served_components

    names = list(COMPONENTS)
    merged, separate = served_components(names, "merged"), served_components(names, "separate")
    assert "controlnet_unet" in merged and not {"controlnet", "unet"} & set(merged)
    assert {"controlnet", "unet"} <= set(separate) and "controlnet_unet" not in separate
    assert merged == [n for n in names if n in merged] and set(merged) | set(separate) == set(names)
    with pytest.raises(ValueError, match=r"--unet: 'fused' is not merged or separate"):
        served_components(names, "fused")
