"""Every config.pbtxt rfad writes parses as Triton's own ModelConfig (for the backends the local
server cannot load too), and the server accepts the flags the profiles give it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

from rfad.components.manifest import export_hash
from rfad.components.registry import component_specs
from rfad.components.specs import ModelFacts
from rfad.deploy.memory import SD15_FACTS
from rfad.deploy.profiles import CPU, DATACENTER, EDGE, MIB, PROFILES
from rfad.export.k8s_serving import server_args
from rfad.export.triton_config import pipeline_config, render_config
from rfad.export.triton_config_check import ConfigError, check_repository, parse_model_config
from rfad.export.triton_judge import judge_configs
from rfad.export.triton_repo import component_config, write_triton_repo
from rfad.export.trt import deployment_record
from rfad.onnx_session import COMPONENT_THREADS, ThreadSettings
from rfad.serving.pipeline_parameters import PipelineParameters

DOCKERFILE = Path(__file__).resolve().parent.parent / "deploy" / "Dockerfile"
# Triton server version -> the NGC release that ships it (Triton's release notes).
NGC_RELEASE = {"2.51.0": "24.10"}


@pytest.mark.parametrize("facts", [SD15_FACTS, ModelFacts(text_dim=32, down_residuals=((32, 1), (32, 2)),
                                                          mid_residual=(64, 2), rfnet_width=32)], ids=["sd15", "tiny"])
@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES)
def test_every_rendered_config_parses_as_triton_model_config(profile, facts):
    specs = component_specs(facts)
    for backend in profile.backends:
        for spec in specs.values():
            serving = profile.component(spec.name)
            parsed = parse_model_config(render_config(component_config(spec, backend, serving)), spec.name)
            assert parsed.max_batch_size == serving.max_batch_size and [t.name for t in parsed.input] == spec.input_names
            assert (parsed.platform or parsed.backend) == {"python": "python", "onnxruntime": "onnxruntime_onnx",
                                                           "tensorrt": "tensorrt_plan"}[backend]
            assert parsed.instance_group[0].count == serving.count
            preferred = serving.batching.preferred_batch_sizes if serving.batching else ()
            assert tuple(parsed.dynamic_batching.preferred_batch_size) == preferred
            assert parsed.HasField("dynamic_batching") == (serving.batching is not None)
    for judge in ("components", "ensemble", "none"):
        parameters = PipelineParameters(judge=judge, default_steps=profile.pipeline.default_steps,
                                        candidates_cap=profile.pipeline.candidates_cap)
        parsed = parse_model_config(render_config(pipeline_config(parameters, profile.pipeline.instances)), "p")
        assert parsed.parameters["judge"].string_value == judge
        assert parsed.parameters["default_steps"].string_value == str(profile.pipeline.default_steps)
    for name, config in judge_configs(specs).items():
        assert parse_model_config(render_config(config), name).name == name


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("KIND_CPU", "KIND_CPUU"), "KIND_CPUU"),
    (lambda t: t.replace("max_batch_size", "max_batch"), "max_batch"),
    (lambda t: t.replace("TYPE_FP32", "TYPE_FLOAT"), "TYPE_FLOAT"),
    (lambda t: re.sub(r"max_queue_delay_microseconds: \d+", "preferred_batch_size: [ 32 ]", t),
     r"preferred_batch_size \[32\] outside 1..max_batch_size 16"),
])
def test_a_config_triton_would_refuse_is_an_error_naming_the_file(edit, message):
    text = render_config(component_config(component_specs(SD15_FACTS)["vae_decoder"], "onnxruntime", CPU.components))
    parse_model_config(text)
    with pytest.raises(ConfigError, match=r"^vae_decoder/config.pbtxt: .*" + message):
        parse_model_config(edit(text), "vae_decoder/config.pbtxt")


# The TensorRT of a Jetson's image, which rfad does not declare (rfad.deploy.images): the operator names it.
JETSON_TENSORRT = "10.3.0"


def _engines(onnx_dir: Path, folder: Path, profile, tensorrt: str | None = None) -> Path:
    """Plans where `rfad-export trt --profile` writes them, with its engines.json record (built
    with the TensorRT of the profile's image unless ``tensorrt`` says otherwise). The writer only
    copies the plans (no TensorRT here): their bytes are never read in this test."""
    folder.mkdir()
    for name in json.loads((onnx_dir / "manifest.json").read_text())["components"]:
        (folder / f"{name}.plan").write_bytes(b"engine built on a GPU")
    record = deployment_record(profile.name, profile.precision == "fp16", profile.engines.batch, profile.engines.image)
    version = tensorrt or profile.image.tensorrt or JETSON_TENSORRT
    (folder / "engines.json").write_text(json.dumps({"tensorrt": version, "gpu": "NVIDIA A100-SXM4-80GB",
                                                     "deployment_profile": record}))
    return folder


# Marked by hand: it asks for its export by name at run time, which the slow-marking hook of
# tests/conftest.py cannot see (unmarked, the fast tier would export both for it).
@pytest.mark.slow
@pytest.mark.parametrize("name, backend", [(p.name, b) for p in PROFILES.values() for b in p.backends])
def test_written_repositories_check_for_every_profile_and_backend(request, tmp_path, name, backend):
    from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

    profile = PROFILES[name]
    onnx_dir = request.getfixturevalue("tiny_onnx" if profile.precision == "fp32" else "tiny_onnx_fp16")
    engines = _engines(onnx_dir, tmp_path / "engines", profile) if backend == "tensorrt" else None
    declared = JETSON_TENSORRT if backend == "tensorrt" and profile.image.tensorrt is None else None
    repo = write_triton_repo(onnx_dir, tmp_path / "repo", profile=name, backend=backend, engines=engines,
                             image_tensorrt=declared)
    configs = check_repository(repo)
    assert {"rfad_pipeline", "rfad_judge", "controlnet_unet", "rfnet"} <= set(configs)
    for component in ("text_encoder", "controlnet_unet", "vae_decoder", "rfnet"):
        serving = profile.component(component)
        group = configs[component].instance_group[0]
        assert (ModelInstanceGroup.Kind.Name(group.kind), group.count) == (serving.kind, serving.count)
        assert configs[component].max_batch_size == serving.max_batch_size
        if backend == "python":  # onnxruntime's threads are written, and GPU tensors are taken as they come
            parameters = {k: v.string_value for k, v in configs[component].parameters.items()}
            assert ThreadSettings.from_parameters(parameters) == COMPONENT_THREADS
            assert parameters.get("FORCE_CPU_ONLY_INPUT_TENSORS") == ("no" if serving.kind == "KIND_GPU" else None)
    pipeline = configs["rfad_pipeline"]
    assert pipeline.instance_group[0].count == profile.pipeline.instances
    # On a GPU profile the loop runs on the GPU, so its tensors stay there between components.
    assert ModelInstanceGroup.Kind.Name(pipeline.instance_group[0].kind) == ("KIND_GPU" if profile.gpu else "KIND_CPU")
    assert {k: v.string_value for k, v in pipeline.parameters.items()} == PipelineParameters(
        max_attempts_cap=profile.pipeline.max_attempts_cap, canvas_size=profile.pipeline.canvas_size,
        default_steps=profile.pipeline.default_steps, candidates_cap=profile.pipeline.candidates_cap).to_config()
    record = json.loads((repo / "deployment.json").read_text())
    assert (record["profile"], record["backend"], record["flags"]) == (name, backend, {"--backend": backend}
                                                                       if backend != profile.backend else {})
    assert record["settings"]["pipeline"]["default_steps"] == profile.pipeline.default_steps
    assert record["export_hash"] == export_hash(onnx_dir)  # rfad-export k8s names the repository's path by it
    if backend == "tensorrt":  # the TensorRT the engines were built with, which the image must have
        assert record["tensorrt"] == (profile.image.tensorrt or JETSON_TENSORRT)
    # A repository whose ensemble calls a model that is not there is refused.
    (repo / "rfnet" / "config.pbtxt").unlink()
    with pytest.raises(ConfigError, match="ensemble step 'rfnet' is not in the repository"):
        check_repository(repo)


def test_repository_flags_that_contradict_the_profile_are_one_line_errors(tiny_onnx, tiny_onnx_fp16, tmp_path):
    from click.testing import CliRunner

    from rfad.export.cli import main as export_cli

    def run(*args):
        result = CliRunner().invoke(export_cli, ["triton-repo", "--out", str(tmp_path / "repo"), *args])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "repo").exists()
        return result.output

    assert "'gpu' is not one of cpu, edge, datacenter" in run("--onnx", str(tiny_onnx), "--profile", "gpu")
    assert "--backend tensorrt contradicts --profile cpu" in run("--onnx", str(tiny_onnx), "--backend", "tensorrt")
    assert "--max-batch 4 contradicts --profile edge" in run("--onnx", str(tiny_onnx_fp16), "--profile", "edge",
                                                             "--max-batch", "4", "--backend", "onnxruntime")
    assert "an fp32 export, but profile edge serves fp16" in run("--onnx", str(tiny_onnx), "--profile", "edge",
                                                                  "--backend", "onnxruntime")
    engines = _engines(tiny_onnx_fp16, tmp_path / "edge-engines", EDGE)
    # Engines built for edge (static 512 px, batch 1-2) cannot serve a datacenter repository.
    message = run("--onnx", str(tiny_onnx_fp16), "--profile", "datacenter", "--backend", "tensorrt",
                  "--engines", str(engines), "--canvas-size", "768")
    assert "built for profile edge: largest batch 2 < max_batch_size 16" in message
    assert "image sides 512-512 px exclude the canvas 768 px" in message
    # Engines of another TensorRT than the serving image's do not load there: refused.
    older = _engines(tiny_onnx_fp16, tmp_path / "older-engines", DATACENTER, tensorrt="10.4.0")
    message = run("--onnx", str(tiny_onnx_fp16), "--profile", "datacenter", "--backend", "tensorrt",
                  "--engines", str(older))
    assert "built with TensorRT 10.4.0, but the serving image has TensorRT 10.5.0" in message
    assert "nvcr.io/nvidia/tensorrt:24.10-py3" in message  # where to rebuild them
    # A Jetson's image declares no TensorRT here: the operator names it, and it must match.
    assert "declares no TensorRT version here: name the one it has with --image-tensorrt" in run(
        "--onnx", str(tiny_onnx_fp16), "--profile", "edge", "--backend", "tensorrt", "--engines", str(engines))
    assert "built with TensorRT 10.3.0, but the serving image has TensorRT 10.2.0" in run(
        "--onnx", str(tiny_onnx_fp16), "--profile", "edge", "--backend", "tensorrt", "--engines", str(engines),
        "--image-tensorrt", "10.2.0")


def _regions(pid: int) -> dict[str, int]:
    """The python backend's shared-memory regions mapped by the server process, with their sizes."""
    names = set(re.findall(r"/dev/shm/(triton_python_backend_shm_region_\S+)", Path(f"/proc/{pid}/maps").read_text()))
    return {name: os.path.getsize(f"/dev/shm/{name}") for name in names}


@pytest.mark.slow
def test_local_server_serves_a_profiles_repository_with_its_settings_and_shared_memory(tiny_onnx, tiny_zoo, tmp_path):
    """A repository written from a profile is served as the profile says: the python backend's
    shared memory from deployment.json (or the manifests' flags), the default steps and the
    candidates cap; the server is the release the Dockerfile builds on, and it exports the
    counters the HPA rule reads."""
    from rfad.client import InvalidRequestError, RfadClient
    from rfad.serving.launcher import TritonServer

    profile = dataclasses.replace(CPU, shm=dataclasses.replace(CPU.shm, default_byte_size=2 * MIB, growth_byte_size=2 * MIB),
                                  pipeline=dataclasses.replace(CPU.pipeline, default_steps=2, candidates_cap=1))
    repo = write_triton_repo(tiny_onnx, tmp_path / "repo", profile=profile, canvas_size=64)
    check_repository(repo)
    product = (tiny_zoo / "samples" / "bottle.png").read_bytes()
    flags = tuple(arg for arg in server_args(EDGE) if arg.startswith("--backend-config=python"))
    for shm, extra in ((profile.shm, ()), (EDGE.shm, flags)):
        with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, extra_args=extra) as server:
            sizes = _regions(server.process.pid)
            assert len(sizes) >= 7 and set(sizes.values()) == {shm.default_byte_size}, sizes
            if extra:
                continue
            version = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2").read())["version"]
            assert f"tritonserver:{NGC_RELEASE[version]}-py3" in DOCKERFILE.read_text()
            with RfadClient(server.grpc_url, retries=0) as client:
                result = client.generate(product, "an ad", max_attempts=1, threshold=0.0)  # no steps: the profile's
                assert result.attempts == 1 and len(result.images) == 1
                with pytest.raises(InvalidRequestError, match=r"candidates: 2 is outside the allowed range \[1, 1\]"):
                    client.generate(product, "an ad", candidates=2)
            metrics = urllib.request.urlopen(server.metrics_url).read().decode()
            assert 'rfad_denoising_steps_total{model="rfad_pipeline"} 2' in metrics
            for series in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
                assert f'{series}{{model="rfad_pipeline",version="1"}}' in metrics


def test_component_thread_parameters_round_trip_and_bad_ones_name_themselves():
    settings = ThreadSettings(intra_op=1, spinning=False)
    assert ThreadSettings.from_parameters(settings.to_parameters()) == settings
    assert ThreadSettings.from_parameters({}) == ThreadSettings()  # onnxruntime's own defaults
    with pytest.raises(ValueError, match=r"^intra_op_threads: 'two' is not a thread count"):
        ThreadSettings.from_parameters({"intra_op_threads": "two"})
    with pytest.raises(ValueError, match=r"^spinning: 'off' is not yes or no"):
        ThreadSettings.from_parameters({"spinning": "off"})
