"""The served pipeline on a real Triton server (nvidia-pytriton's tritonserver), tiny models.

The server is the session's (tests/conftest.py: started once, from a repository written by
`rfad-export triton-repo`); requests go over real gRPC through `rfad.client`.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.client import InvalidRequestError, RfadClient, UnavailableError
from rfad.client.cli import main as client_cli
from rfad.contract import MAX_SEED
from rfad.models.diffusion import load_diffusion_models
from rfad.models.judge import load_judge_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.generate import generate
from rfad.pipeline.judge import RunnerJudge
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.serving import ServerStartError
from rfad.serving.launcher import TritonServer, free_port

SIZE = 128


@pytest.fixture(scope="module")
def repo(tiny_repo):
    """The session's served repository (tests/conftest.py): the tiny export at a 128 px canvas."""
    return tiny_repo


@pytest.fixture(scope="module")
def server(tiny_server):
    """The session's running server over it (tests/conftest.py)."""
    return tiny_server


@pytest.fixture(scope="module")
def client(server):
    return RfadClient(server.grpc_url, retries=0)


@pytest.fixture(scope="module")
def product(tiny_zoo):
    return (tiny_zoo / "samples" / "bottle.png").read_bytes()


def test_served_image_equals_the_torch_runner(client, product, tiny_zoo):
    result = client.generate(product, "a bottle on a marble table", caption="red bottle", seed=3, steps=3,
                             max_attempts=1, threshold=0.0)
    assert result.attempts == 1 and result.seeds == [3] and result.available == [True]
    served = np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB"))
    model_set = ModelSet.resolve(tiny_zoo)
    runner = TorchRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))
    canvas = prepare_canvas(product, CanvasSpec(width=SIZE, height=SIZE))
    local = generate(runner, canvas, "a bottle on a marble table", GenerationSettings(
        steps=3, seed=3, max_attempts=1, threshold=0.0), caption="red bottle", judge=RunnerJudge(runner))
    assert served.shape == (SIZE, SIZE, 3)
    assert np.abs(served.astype(int) - local.images[0].image.astype(int)).max() <= 2
    assert np.allclose(result.probabilities[0], local.images[0].probabilities, atol=1e-4)


def _bls_counters(server) -> dict[tuple[str, str], float]:
    """(metric, component) -> value of rfad_pipeline's BLS counters on Triton's /metrics page."""
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return {(name, component): float(value) for name, component, value in re.findall(
        r'^(rfad_bls_\w+)\{component="(\w+)",model="rfad_pipeline"\} (\S+)$', text, re.MULTILINE)}


def test_each_request_sends_its_own_constants_and_the_bls_calls_are_counted(server, client, product, tiny_onnx):
    """The pipeline sends a request's constants (prompt embeddings, control image) once and reuses
    them at every step: requests with other prompts in between get their own, not a stale copy,
    and each gives the in-process onnxruntime image; the BLS calls per model are counted."""
    from rfad.pipeline.onnx_runner import OnnxRunner

    request = dict(caption="red bottle", seed=5, steps=3, max_attempts=1, threshold=0.0)
    before = _bls_counters(server)
    first = client.generate(product, "a bottle on a marble table", **request)
    other = client.generate(product, "a bottle in a pine forest at dusk", **request)
    again = client.generate(product, "a bottle on a marble table", **request)
    after = _bls_counters(server)
    assert first.images == again.images and first.images != other.images
    canvas = prepare_canvas(product, CanvasSpec(width=SIZE, height=SIZE))
    local = generate(OnnxRunner(tiny_onnx, merged=True), canvas, "a bottle in a pine forest at dusk",
                     GenerationSettings(steps=3, seed=5, max_attempts=1, threshold=0.0))
    served = np.asarray(Image.open(io.BytesIO(other.images[0])).convert("RGB"))
    assert np.abs(served.astype(int) - local.images[0].image.astype(int)).max() <= 2
    calls = {component: after[("rfad_bls_calls_total", component)] - before.get(("rfad_bls_calls_total", component), 0)
             for metric, component in after if metric == "rfad_bls_calls_total"}
    # Per request: the two prompts encoded in one call, the init image once, 3 steps, one decode, one verdict.
    assert calls == {"text_encoder": 3, "vae_encoder": 3, "controlnet_unet": 9, "vae_decoder": 3, "rfad_judge": 3}
    assert all(after[("rfad_bls_seconds_total", c)] > before.get(("rfad_bls_seconds_total", c), 0) for c in calls)


def test_loop_stops_at_first_available_and_respects_max_attempts(client, product):
    never = client.generate(product, "ad", steps=2, max_attempts=3, threshold=1.0)
    assert never.attempts == 3 and never.available == [False] and len(never.probabilities[0]) == 5
    first = client.generate(product, "ad", steps=2, max_attempts=3, threshold=0.0)
    assert first.attempts == 1 and first.available == [True]
    many = client.generate(product, "ad", steps=2, num_images=2, candidates=2, threshold=0.0)
    assert many.attempts == 1 and many.seeds == [0, 1] and len(many.images) == 2
    # The most candidates the contract allows: one batch of 16 (CFG) through every component.
    most = client.generate(product, "ad", steps=1, candidates=8, num_images=8, max_attempts=1, threshold=0.0)
    assert most.attempts == 1 and most.seeds == list(range(8)) and len(most.images) == 8


def _raw_infer(server, **arrays):
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, (datatype, array) in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return grpcclient.InferenceServerClient(server.grpc_url).infer("rfad_pipeline", inputs)


@pytest.mark.parametrize("change, field", [
    ({"prompt": ("BYTES", np.array([b""], dtype=object))}, "prompt"),
    ({"product_image": ("BYTES", np.array([b"not an image"], dtype=object))}, "product image"),
    ({"steps": ("INT32", np.array([0], dtype=np.int32))}, "steps"),
    ({"max_attempts": ("INT32", np.array([99], dtype=np.int32))}, "max_attempts"),
    ({"guidance_scale": ("FP32", np.array([math.nan], dtype=np.float32))}, "guidance_scale"),
])
def test_bad_requests_are_invalid_argument_and_the_server_keeps_serving(server, client, product, change, field):
    from tritonclient.utils import InferenceServerException

    arrays = {"product_image": ("BYTES", np.array([product], dtype=object)),
              "prompt": ("BYTES", np.array([b"ad"], dtype=object)), **change}
    with pytest.raises(InferenceServerException) as info:
        _raw_infer(server, **arrays)
    assert "INVALID_ARGUMENT" in str(info.value.status()) and field in info.value.message()
    assert client.is_ready()


def test_image_without_alpha_and_missing_prompt(server, client, product):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, format="PNG")
    with pytest.raises(InvalidRequestError, match="alpha"):
        client.generate(buffer.getvalue(), "ad", steps=2)
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="prompt"):
        _raw_infer(server, product_image=("BYTES", np.array([product], dtype=object)))
    assert client.generate(product, "ad", steps=1, max_attempts=1).attempts == 1  # still serving


def test_client_validates_locally_and_reports_unavailable(product):
    with pytest.raises(InvalidRequestError, match="steps"):
        RfadClient("127.0.0.1:1").generate(product, "ad", steps=1000)
    start = time.monotonic()
    with pytest.raises(UnavailableError):
        RfadClient(f"127.0.0.1:{free_port()}", retries=2, backoff_s=0.1).generate(product, "ad", steps=1)
    assert time.monotonic() - start >= 0.3  # 0.1 + 0.2 of backoff before giving up


def test_client_cli_generate(server, tiny_zoo, tmp_path):
    result = CliRunner().invoke(client_cli, [
        "generate", "--url", server.grpc_url, "--product", str(tiny_zoo / "samples" / "mug.png"), "--prompt", "ad",
        "--caption", "blue mug", "--steps", "2", "--max-attempts", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "result.json").read_text())
    assert summary["attempts"] == 1 and len(summary["probabilities"][0]) == 5
    assert Image.open(tmp_path / "o" / "image-0.png").size == (SIZE, SIZE)


def test_seeds_at_the_top_of_their_range(server, client, product):
    """The largest seed 2 candidates x 2 attempts allow runs end to end (the last candidate's seed
    is 2**63 - 1); one more is INVALID_ARGUMENT naming seed and that largest seed, before any work."""
    from tritonclient.utils import InferenceServerException

    largest = MAX_SEED - 3
    result = client.generate(product, "ad", seed=largest, steps=1, candidates=2, max_attempts=2, num_images=4,
                             threshold=1.0)  # never Available: both attempts run, all four candidates return
    assert result.attempts == 2 and sorted(result.seeds) == [largest, largest + 1, largest + 2, MAX_SEED]

    with pytest.raises(InvalidRequestError) as info:
        client.generate(product, "ad", seed=largest + 1, steps=1, candidates=2, max_attempts=2)
    assert info.value.local and str(info.value).startswith("seed: ")
    arrays = {"product_image": ("BYTES", np.array([product], dtype=object)),
              "prompt": ("BYTES", np.array([b"ad"], dtype=object)),
              "seed": ("INT64", np.array([largest + 1], dtype=np.int64)),
              "steps": ("INT32", np.array([1], dtype=np.int32)),
              "candidates": ("INT32", np.array([2], dtype=np.int32)),
              "max_attempts": ("INT32", np.array([2], dtype=np.int32))}
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as info:
        _raw_infer(server, **arrays)
    assert "INVALID_ARGUMENT" in str(info.value.status()) and time.monotonic() - started < 2
    assert info.value.message().startswith("seed: ") and info.value.message().endswith(
        f"the largest seed allowed for this request is {largest}")
    assert client.is_ready()


def _build_outputs(root: Path) -> dict[str, int]:
    """What building a wheel in a source tree writes (build/, dist/, *.egg-info): path -> mtime."""
    tops = [top for pattern in ("build", "dist", "*.egg-info") for top in root.glob(pattern)]
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for top in tops for p in [top, *top.rglob("*")]}


@pytest.mark.slow
def test_the_client_installs_alone_and_talks_to_the_server(server, tiny_zoo, tmp_path):
    """`pip install rfad` (no extras) into a fresh venv: no torch there, yet `rfad-client health` and
    `rfad-client generate` work against the served pipeline, and the other commands name their extra.

    Built from a copy of the checkout's files (pip builds in the source tree), so the checkout is
    left as it was. 12.5 s here (2 cores, warm pip cache; the install is most of it)."""
    root = Path(__file__).resolve().parents[1]
    git_status = ["git", "status", "--porcelain"]
    status_before = subprocess.run(git_status, cwd=root, capture_output=True, text=True, check=True).stdout
    builds_before = _build_outputs(root)
    source = tmp_path / "source"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (root / name).is_file():  # not a file deleted in the working tree
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The checkout's pip installs into the new venv (--python), which saves bootstrapping one there.
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--quiet", "-c", str(root / "constraints" / "cpu.txt"), str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    def run(*command):
        return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)  # not the checkout: its rfad/ must not be importable

    no_torch = run("python", "-c", "import torch")
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    health = run("rfad-client", "health", "--url", server.grpc_url)
    assert health.returncode == 0 and f"{server.grpc_url} ready" in health.stdout, health.stderr
    generated = run("rfad-client", "generate", "--url", server.grpc_url, "--product",
                    str(tiny_zoo / "samples" / "mug.png"), "--prompt", "ad", "--steps", "1", "--max-attempts", "1",
                    "--out", str(tmp_path / "out"))
    assert generated.returncode == 0, generated.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["attempts"] == 1
    assert Image.open(tmp_path / "out" / "image-0.png").size == (SIZE, SIZE)
    train = run("rfad-train", "rfnet", "--help")
    assert (train.returncode, train.stderr) == (1, 'Error: rfad-train needs the \'train\' extra: pip install "rfad[train]"\n')
    tiny = run("rfad", "tiny", "--out", str(tmp_path / "zoo"))
    assert tiny.returncode == 1 and tiny.stderr.endswith('needs the \'generate\' extra: pip install "rfad[generate]"\n')

    assert subprocess.run(git_status, cwd=root, capture_output=True, text=True, check=True).stdout == status_before
    assert _build_outputs(root) == builds_before


def test_eight_concurrent_clients_all_succeed(server, product):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return RfadClient(server.grpc_url, retries=0).generate(product, "ad", seed=i, steps=1, max_attempts=1)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert [r.seeds for r in results] == [[i] for i in range(8)]


def test_deadline_cancels_the_work_on_the_server(client, product):
    from rfad.client import DeadlineExceededError

    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        client.generate(product, "ad", steps=150, max_attempts=1, deadline_s=1.0)
    assert time.monotonic() - start < 5
    # rfad_pipeline has one instance: had the 150-step request kept running, this one would
    # queue behind its remaining ~148 steps; cancelled between steps, it runs at once (about
    # 1 s here, against 0.05 s or more per step for the abandoned one).
    start = time.monotonic()
    assert client.generate(product, "ad", steps=1, max_attempts=1).attempts == 1
    assert time.monotonic() - start < 5


# rfad_pipeline copies, each with one hand-edited parameter it cannot use -> what its load error says.
UNUSABLE_PARAMETERS = {
    "unknown_key": ({"judje": "ensemble"}, "judje: unknown parameter"),
    "text_cap": ({"max_attempts_cap": "twenty"}, "max_attempts_cap: expected an integer, got 'twenty'"),
    "small_canvas": ({"canvas_size": "32"}, "canvas_size: 32 is not a canvas side: must be at least 64"),
    "misspelt_judge": ({"judge": "ensamble"}, "judge: 'ensamble' is not one of ensemble, components, none"),
    # The copies sit in a repository without rfad_judge and the judge components.
    "no_rfad_judge": ({"judge": "ensemble"}, "judge: 'ensemble' needs the rfad_judge model"),
    "no_components": ({"judge": "components"}, "judge: 'components' needs depth, saliency, rfnet_text, rfnet"),
}


def _set_parameter(config: str, key: str, value: str) -> str:
    """config.pbtxt text with parameter ``key`` set to ``value`` (added if absent), as an operator edits it."""
    pattern = re.compile(rf'(key: "{key}"\s*value: {{ string_value: )"[^"]*"')
    if pattern.search(config):
        return pattern.sub(rf'\1"{value}"', config)
    return config + f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}\n'


def test_unusable_repository_parameters_stop_the_server_naming_model_and_parameter(repo, tmp_path):
    # One server start for every case: each copy fails its own load, and the error lists them all.
    broken = tmp_path / "broken"
    for name, (edit, _) in UNUSABLE_PARAMETERS.items():
        shutil.copytree(repo / "rfad_pipeline", broken / name)
        config = (broken / name / "config.pbtxt").read_text().replace('name: "rfad_pipeline"', f'name: "{name}"')
        for key, value in edit.items():
            config = _set_parameter(config, key, value)
        (broken / name / "config.pbtxt").write_text(config)
    server = TritonServer(broken, grpc_port=0, http_port=0, metrics_port=0, startup_timeout_s=120)
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert set(info.value.failed_models) == set(UNUSABLE_PARAMETERS)
    # Each model's own load error (Triton logs one line per model) names its parameter.
    reasons = dict(re.findall(r"failed to load '([^']+)' version \d+: (.*)", info.value.log_tail))
    for name, (_, says) in UNUSABLE_PARAMETERS.items():
        assert says in reasons[name], (name, reasons[name])
        assert f"{name}: " in str(info.value) and says in str(info.value)
