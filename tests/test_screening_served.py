"""Early screening in the served loop: rfad_pipeline on a real Triton server (python backend), tiny models.

One server for the module serves the repository `rfad-export triton-repo` writes (judge
'ensemble') and a copy of its pipeline model judging with 'none'. Requests go over real gRPC
through rfad.client; the in-process torch runner is the reference.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import urllib.request

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.client import InvalidRequestError, RfadClient
from rfad.client.cli import main as client_cli
from rfad.export.triton_repo import write_triton_repo
from rfad.models.diffusion import load_diffusion_models
from rfad.models.judge import load_judge_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.generate import generate
from rfad.pipeline.judge import RunnerJudge
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.serving.launcher import TritonServer

SIZE = 64
NO_JUDGE = "rfad_pipeline_no_judge"
PROMPT, CAPTION = "a bottle on a marble table", "red bottle"


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    repo = write_triton_repo(tiny_onnx, tmp_path_factory.mktemp("screen-repo") / "repo", canvas_size=SIZE)
    shutil.copytree(repo / "rfad_pipeline", repo / NO_JUDGE)
    config = (repo / NO_JUDGE / "config.pbtxt").read_text().replace('name: "rfad_pipeline"', f'name: "{NO_JUDGE}"')
    config = re.sub(r'(key: "judge"\s*value: \{ string_value: )"[^"]*"', r'\1"none"', config)
    (repo / NO_JUDGE / "config.pbtxt").write_text(config)
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return RfadClient(server.grpc_url, retries=0)


@pytest.fixture(scope="module")
def product(tiny_zoo):
    return (tiny_zoo / "samples" / "bottle.png").read_bytes()


@pytest.fixture(scope="module")
def local(tiny_zoo, product):
    """The in-process reference: (torch runner with the judge, the canvas the server makes)."""
    model_set = ModelSet.resolve(tiny_zoo)
    runner = TorchRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))
    return runner, prepare_canvas(product, CanvasSpec(width=SIZE, height=SIZE))


def _local_run(local, previews=None, **settings):
    runner, canvas = local
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores spin against each other
    try:
        return generate(runner, canvas, PROMPT, GenerationSettings(**settings), caption=CAPTION,
                        judge=RunnerJudge(runner), on_preview=None if previews is None else previews.append)
    finally:
        torch.set_num_threads(threads)


def _screened_counter(server) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    found = re.search(r'^rfad_candidates_screened_total\{model="rfad_pipeline"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_a_threshold_of_one_screens_up_to_the_bound_as_in_process(server, tiny_zoo, local, tmp_path):
    """Through rfad-client's flags: 4 steps screened at 2, each slot refilled at most twice per
    attempt; the response names the screened seeds, steps and p, as the torch runner has them."""
    before = _screened_counter(server)
    run = CliRunner().invoke(client_cli, [
        "generate", "--url", server.grpc_url, "--product", str(tiny_zoo / "samples" / "bottle.png"),
        "--prompt", PROMPT, "--caption", CAPTION, "--steps", "4", "--max-attempts", "2", "--threshold", "1.0",
        "--screen-at", "0.5", "--screen-threshold", "1.0", "--out", str(tmp_path / "o")])
    assert run.exit_code == 0, run.output
    assert "4 candidate(s) screened out" in run.output
    served = json.loads((tmp_path / "o" / "result.json").read_text())
    assert [(s["seed"], s["step"]) for s in served["screened"]] == [(0, 2), (1, 2), (3, 2), (4, 2)]
    assert served["attempts"] == 2 and served["seeds"][0] in (2, 5)
    assert served["request"]["screen_at"] == 0.5 and served["request"]["screen_threshold"] == 1.0
    reference = _local_run(local, steps=4, max_attempts=2, threshold=1.0, screen_at=0.5, screen_threshold=1.0)
    assert np.allclose([s["p_available"] for s in served["screened"]],
                       [c.p_available for c in reference.screened], atol=1e-4)
    returned = next(c for c in reference.candidates if c.seed == served["seeds"][0])
    assert np.abs(_pixels((tmp_path / "o" / "image-0.png").read_bytes()) - returned.image.astype(int)).max() <= 2
    assert _screened_counter(server) - before == 4


def test_a_replacement_beside_a_survivor_is_deterministic_and_matches_in_process(client, product, local):
    """K = 2, screened at step 3 of 4: the threshold between the two previews' p (from the torch
    runner) screens one; its replacement runs beside the survivor at other timesteps."""
    request = dict(steps=4, candidates=2, num_images=2, max_attempts=1, threshold=1.0, screen_at=0.75)
    previews = []
    _local_run(local, previews, **request, screen_threshold=0.0)
    p = sorted(preview.p_available for preview in previews)
    assert p[1] - p[0] > 1e-3
    request["screen_threshold"] = (p[0] + p[1]) / 2
    reference = _local_run(local, **request)
    first = client.generate(product, PROMPT, caption=CAPTION, **request)
    again = client.generate(product, PROMPT, caption=CAPTION, **request)
    assert first.screened_seeds == [reference.screened[0].seed] and first.screened_steps == [3]
    assert abs(first.screened_p[0] - reference.screened[0].p_available) < 1e-4
    assert sorted(first.seeds) == sorted(c.seed for c in reference.candidates)
    assert first.images == again.images and first.screened == again.screened
    by_seed = {c.seed: c.image.astype(int) for c in reference.candidates}
    for seed, png in zip(first.seeds, first.images):
        assert np.abs(_pixels(png) - by_seed[seed]).max() <= 2


def test_a_threshold_of_zero_screens_nothing(client, product):
    request = dict(caption=CAPTION, steps=4, candidates=2, num_images=2, max_attempts=1, threshold=1.0)
    plain = client.generate(product, PROMPT, **request)
    screened = client.generate(product, PROMPT, **request, screen_at=0.5, screen_threshold=0.0)
    assert screened.screened == [] and screened.screened_seeds == []
    assert screened.images == plain.images and screened.seeds == plain.seeds and sorted(plain.seeds) == [0, 1]


def _raw_infer(server, model: str = "rfad_pipeline", **arrays):
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, (datatype, array) in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return grpcclient.InferenceServerClient(server.grpc_url).infer(model, inputs)


def _number(datatype: str, value) -> tuple[str, np.ndarray]:
    return datatype, np.array([value], dtype={"FP32": np.float32, "INT32": np.int32}[datatype])


@pytest.mark.parametrize("model, settings, words", [
    ("rfad_pipeline", {"screen_at": 1.5, "screen_threshold": 0.5}, "screen_at: 1.5 is outside the allowed range"),
    ("rfad_pipeline", {"screen_at": 0.0, "screen_threshold": 0.5}, "screen_at: 0.0 is outside the allowed range (0, 1)"),
    ("rfad_pipeline", {"screen_threshold": 0.5}, "screen_threshold: given without screen_at"),
    ("rfad_pipeline", {"screen_at": 0.25}, "screen_threshold: required with screen_at"),
    ("rfad_pipeline", {"steps": 4, "screen_at": 0.1, "screen_threshold": 0.5}, "screen_at: 0.1 x 4 steps rounds to "
                                                                                "step 0"),
    (NO_JUDGE, {"steps": 2, "screen_at": 0.5, "screen_threshold": 0.5}, "screen_at: early screening needs a judge"),
])
def test_bad_screening_requests_are_invalid_argument_naming_the_field(server, client, product, model, settings, words):
    from tritonclient.utils import InferenceServerException

    arrays = {"product_image": ("BYTES", np.array([product], dtype=object)),
              "prompt": ("BYTES", np.array([b"ad"], dtype=object)),
              **{name: _number("INT32" if name == "steps" else "FP32", value) for name, value in settings.items()}}
    with pytest.raises(InferenceServerException) as info:
        _raw_infer(server, model, **arrays)
    assert "INVALID_ARGUMENT" in str(info.value.status()) and words in info.value.message()
    if model == "rfad_pipeline":  # the client refuses it before sending, with the same words
        with pytest.raises(InvalidRequestError, match=re.escape(words.split(" is ")[0])):
            client.generate(product, "ad", **settings)
    assert client.is_ready()
