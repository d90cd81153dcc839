"""The rfad_judge ensemble on a real Triton server (tiny zoo), its client and CLI, and the
pipeline judging through it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.client import InvalidRequestError, RfadClient
from rfad.client.cli import main as client_cli
from rfad.contract import JUDGE_MAX_IMAGES, InvalidRequest
from rfad.export.triton_repo import write_triton_repo
from rfad.models.diffusion import load_diffusion_models
from rfad.models.judge import load_judge_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.judge import RunnerJudge
from rfad.pipeline.torch_runner import TorchRunner
from rfad.serving.judge_io import parse_judge_request
from rfad.serving.launcher import TritonServer

SIZE = 128


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _ads(n: int, width: int = SIZE, height: int = SIZE, seed: int = 0) -> list[bytes]:
    """``n`` different ad-like images: smooth random colour fields with noise."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
        images.append(_png(np.clip(field + rng.integers(-20, 20, field.shape), 0, 255).astype(np.uint8)))
    return images


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


@pytest.fixture(scope="module")
def torch_judge(tiny_zoo):
    model_set = ModelSet.resolve(tiny_zoo)
    runner = TorchRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))
    return RunnerJudge(runner)


def _in_process(judge: RunnerJudge, images: list[bytes], product: bytes, caption: str) -> np.ndarray:
    """What the pipeline's own judge says of ``images``: the product placed on a canvas of their size."""
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])
    height, width = decoded.shape[1:3]
    state = judge.prepare(prepare_canvas(product, CanvasSpec(width=width, height=height)), caption)
    return judge(decoded, state)


@pytest.mark.parametrize("width, height", [(SIZE, SIZE), (SIZE, 96)])
def test_ensemble_equals_the_in_process_rfnet(client, product, torch_judge, width, height):
    images = _ads(3, width, height)
    result = client.judge(images, product, caption="red bottle 500ml")
    expected = _in_process(torch_judge, images, product, "red bottle 500ml")
    assert np.allclose(result.probabilities, expected, atol=1e-4)
    assert np.allclose(np.sum(result.probabilities, axis=1), 1.0, atol=1e-5)
    assert result.available == [bool(p >= 0.5) for p in expected[:, 0]]
    # The caption is an input of the judge: another caption, other probabilities.
    other = client.judge(images, product, caption="a completely different product title")
    assert not np.allclose(other.probabilities, result.probabilities, atol=1e-6)


def test_a_batch_of_eight_equals_eight_single_requests(client, product):
    images = _ads(8, seed=1)
    batch = client.judge(images, product, caption="mug")
    singles = [client.judge([image], product, caption="mug") for image in images]
    assert np.allclose(batch.probabilities, [s.probabilities[0] for s in singles], atol=1e-5)
    assert batch.available == [s.available[0] for s in singles]


def test_threshold_sets_the_verdicts(client, product):
    images = _ads(2, seed=2)
    assert client.judge(images, product, threshold=0.0).available == [True, True]
    assert client.judge(images, product, threshold=1.0).available == [False, False]
    with pytest.raises(InvalidRequestError, match="threshold"):
        client.judge(images, product, threshold=1.5)


def test_bad_images_fail_the_request_naming_the_index(server, client, product):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    def raw(images: list[bytes], product_image: bytes = product):
        inputs = []
        for name, values in (("generated_image", images), ("product_image", [product_image])):
            tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array(values, dtype=np.object_))
            inputs.append(tensor)
        return grpcclient.InferenceServerClient(server.grpc_url).infer("rfad_judge", inputs)

    good = _ads(3, seed=3)
    cases = [
        (good[:2] + [b"not an image"], "generated_image[2]"),
        ([good[0], _ads(1, 96, 96)[0]], "generated_image[1]"),
        (good, "alpha"),  # the product is an RGB image: no cut-out to place
    ]
    for images, expected in cases:
        rgb_product = _png(np.full((64, 64, 3), 9, np.uint8))
        with pytest.raises(InferenceServerException) as info:
            raw(images, rgb_product if expected == "alpha" else product)
        assert "INVALID_ARGUMENT" in str(info.value.status()) and expected in info.value.message()
    with pytest.raises(InvalidRequestError, match=f"1 to {JUDGE_MAX_IMAGES}"):
        client.judge(_ads(JUDGE_MAX_IMAGES + 1), product)
    assert len(client.judge(good, product).available) == 3  # still serving


def test_parse_judge_request_checks_fields_without_a_server(product):
    base = {"generated_image": np.array(_ads(1), dtype=np.object_), "product_image": np.array([product], dtype=np.object_)}
    assert parse_judge_request(base).threshold == 0.5
    for change, message in [({"caption": np.array([b"\xff\xfe"], dtype=np.object_)}, "caption: not valid UTF-8"),
                            ({"threshold": np.array([np.nan], dtype=np.float32)}, "threshold"),
                            ({"generated_image": np.array([b""], dtype=np.object_)}, "generated_image[0]: empty"),
                            ({"nope": np.array([1])}, "unknown input")]:
        with pytest.raises(InvalidRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_judge_request({**base, **change})


def test_cli_judges_a_folder_and_a_jsonl_list(server, product, tmp_path):
    folder = tmp_path / "ads"
    folder.mkdir()
    for i, data in enumerate(_ads(5, seed=4)):
        (folder / f"ad-{i}.png").write_bytes(data)
    (folder / "small.png").write_bytes(_ads(1, 96, 96, seed=5)[0])  # another size: its own request
    (tmp_path / "product.png").write_bytes(product)
    out = tmp_path / "verdicts.jsonl"
    result = CliRunner().invoke(client_cli, ["judge", "--url", server.grpc_url, "--images", str(folder), "--product",
                                             str(tmp_path / "product.png"), "--caption", "bottle", "--batch-size", "2",
                                             "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(["small.png"] + [f"ad-{i}.png" for i in range(5)])
    assert all(set(r) == {"id", "image", "available", "label", "probabilities"} for r in rows)
    assert "judged Available" in result.output and "Shape Hallucination" in result.output and "0 failed" in result.output

    # A JSONL list with ids, one broken image: its request fails, the others are judged; exit 1.
    (folder / "broken.png").write_bytes(b"garbage")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(line) for line in [
        {"image": "ads/ad-0.png", "id": "a"}, {"image": "ads/broken.png", "id": "b"},
        {"image": "ads/ad-1.png", "id": "c", "caption": "other"}]) + "\n")
    result = CliRunner().invoke(client_cli, ["judge", "--url", server.grpc_url, "--images", str(jobs), "--product",
                                             str(tmp_path / "product.png"), "--batch-size", "1", "--out", str(out),
                                             "--no-progress"])
    assert result.exit_code == 1
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "label" in rows["a"] and "label" in rows["c"] and "generated_image[0]" in rows["b"]["error"]
    jobs.write_text('{"id": "x"}\n')
    result = CliRunner().invoke(client_cli, ["judge", "--url", server.grpc_url, "--images", str(jobs), "--product",
                                             str(tmp_path / "product.png"), "--out", str(out)])
    assert result.exit_code == 1 and "jobs.jsonl:1" in result.output


def test_pipeline_judging_through_the_components_equals_the_ensemble(tiny_onnx, repo, client, product, tmp_path):
    # The module's server judges through rfad_judge (the default); this one through the components.
    assert 'string_value: "ensemble"' in (repo / "rfad_pipeline" / "config.pbtxt").read_text()
    other_repo = write_triton_repo(tiny_onnx, tmp_path / "repo", canvas_size=SIZE, pipeline_judge="components")
    assert 'string_value: "components"' in (other_repo / "rfad_pipeline" / "config.pbtxt").read_text()
    request = dict(caption="red bottle", seed=5, steps=2, candidates=2, num_images=2, max_attempts=1, threshold=0.0)
    reference = client.generate(product, "a bottle on a marble table", **request)
    with TritonServer(other_repo, grpc_port=0, http_port=0, metrics_port=0) as other:
        result = RfadClient(other.grpc_url, retries=0).generate(product, "a bottle on a marble table", **request)
    assert result.seeds == reference.seeds and result.images == reference.images
    assert np.allclose(result.probabilities, reference.probabilities, atol=1e-5)
