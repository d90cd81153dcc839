"""Every config.pbtxt rfad writes parses as Triton's own ModelConfig (for the backends the local
server cannot load too), and the server accepts the flags the profiles give it."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

from rfad.components.registry import component_specs
from rfad.components.specs import ModelFacts
from rfad.deploy.memory import SD15_FACTS
from rfad.deploy.profiles import CPU, EDGE
from rfad.export.k8s_serving import server_args
from rfad.export.triton_config import pipeline_config, render_config
from rfad.export.triton_config_check import ConfigError, check_repository, parse_model_config
from rfad.export.triton_judge import judge_configs
from rfad.export.triton_repo import BACKENDS, component_config, write_triton_repo

DOCKERFILE = Path(__file__).resolve().parent.parent / "deploy" / "Dockerfile"
# Triton server version -> the NGC release that ships it (Triton's release notes).
NGC_RELEASE = {"2.51.0": "24.10"}


@pytest.mark.parametrize("facts", [SD15_FACTS, ModelFacts(text_dim=32, down_residuals=((32, 1), (32, 2)),
                                                          mid_residual=(64, 2), rfnet_width=32)], ids=["sd15", "tiny"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_rendered_config_parses_as_triton_model_config(backend, facts):
    specs = component_specs(facts)
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_CPU"
    for spec in specs.values():
        parsed = parse_model_config(render_config(component_config(spec, backend, 16, kind)), spec.name)
        assert parsed.max_batch_size == 16 and [t.name for t in parsed.input] == spec.input_names
        assert (parsed.platform or parsed.backend) == {"python": "python", "onnxruntime": "onnxruntime_onnx",
                                                       "tensorrt": "tensorrt_plan"}[backend]
    for judge in ("components", "ensemble", "none"):
        parsed = parse_model_config(render_config(pipeline_config(judge=judge)), "rfad_pipeline")
        assert parsed.parameters["judge"].string_value == judge
    for name, config in judge_configs(specs).items():
        assert parse_model_config(render_config(config), name).name == name


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("KIND_CPU", "KIND_CPUU"), "KIND_CPUU"),
    (lambda t: t.replace("max_batch_size", "max_batch"), "max_batch"),
    (lambda t: t.replace("TYPE_FP32", "TYPE_FLOAT"), "TYPE_FLOAT"),
    (lambda t: t.replace("max_queue_delay_microseconds: 2000", "preferred_batch_size: [ 32 ]"),
     r"preferred_batch_size \[32\] outside 1..max_batch_size 16"),
])
def test_a_config_triton_would_refuse_is_an_error_naming_the_file(edit, message):
    text = render_config(component_config(component_specs(SD15_FACTS)["vae_decoder"], "onnxruntime", 16, "KIND_CPU"))
    parse_model_config(text)
    with pytest.raises(ConfigError, match=r"^vae_decoder/config.pbtxt: .*" + message):
        parse_model_config(edit(text), "vae_decoder/config.pbtxt")


@pytest.mark.parametrize("backend", BACKENDS)
def test_written_repositories_check_for_every_backend(tiny_onnx, tmp_path, backend):
    from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

    engines = None
    if backend == "tensorrt":
        # The writer only copies the plans (no TensorRT here); their bytes are never read in this test.
        engines = tmp_path / "engines"
        engines.mkdir()
        for name in json.loads((tiny_onnx / "manifest.json").read_text())["components"]:
            (engines / f"{name}.plan").write_bytes(b"engine built on a GPU")
    repo = write_triton_repo(tiny_onnx, tmp_path / "repo", backend=backend, engines=engines)
    component_names = set(json.loads((tiny_onnx / "manifest.json").read_text())["components"]) - {"controlnet", "unet"}
    configs = check_repository(repo)
    assert {"rfad_pipeline", "rfad_judge", "controlnet_unet", "rfnet"} <= set(configs)
    kinds = {ModelInstanceGroup.Kind.Name(c.instance_group[0].kind) for name, c in configs.items()
             if name in component_names}
    assert kinds == {"KIND_GPU" if backend == "tensorrt" else "KIND_CPU"}
    # A repository whose ensemble calls a model that is not there is refused.
    (repo / "rfnet" / "config.pbtxt").unlink()
    with pytest.raises(ConfigError, match="ensemble step 'rfnet' is not in the repository"):
        check_repository(repo)


def _regions(pid: int) -> dict[str, int]:
    """The python backend's shared-memory regions mapped by the server process, with their sizes."""
    names = set(re.findall(r"/dev/shm/(triton_python_backend_shm_region_\S+)", Path(f"/proc/{pid}/maps").read_text()))
    return {name: os.path.getsize(f"/dev/shm/{name}") for name in names}


@pytest.mark.slow
def test_local_server_loads_the_python_repository_with_each_profiles_shared_memory(tiny_onnx, tmp_path):
    """The server rfad serves with here is the release the Dockerfile builds on; it takes the
    python backend flags the manifests give it; and it exports the counters the HPA rule reads."""
    from rfad.serving.launcher import TritonServer

    repo = write_triton_repo(tiny_onnx, tmp_path / "repo")
    check_repository(repo)
    flags = tuple(arg for arg in server_args(EDGE) if arg.startswith("--backend-config=python"))
    for profile, extra in ((CPU, ()), (EDGE, flags)):
        with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0, extra_args=extra) as server:
            sizes = _regions(server.process.pid)
            assert len(sizes) >= 7 and set(sizes.values()) == {profile.shm.default_byte_size}, sizes
            if profile is CPU:
                version = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2").read())["version"]
                assert f"tritonserver:{NGC_RELEASE[version]}-py3" in DOCKERFILE.read_text()
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
                for series in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
                    assert f'{series}{{model="rfad_pipeline",version="1"}}' in metrics
