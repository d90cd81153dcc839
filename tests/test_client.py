"""rfad.client: request building, local validation, error mapping, retries, deadlines, the CLI.

Transport tests run against a REAL Triton server (the nvidia-pytriton wheel's, started with
rfad.serving.launcher) serving a small python model named ``rfad_pipeline`` that is written
here. That model is a stand-in for the real pipeline, used only to test the client's
transport: it declares the contract's inputs and outputs (generated from rfad.contract),
validates like the server does (INVALID_ARGUMENT for an empty prompt or a product image
without alpha) and answers with a deterministic fake result that echoes the request's values,
so every field's trip can be checked. The real pipeline's tests are in test_serving.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import inspect
import io
import json
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rfad.client import (
    AsyncRfadClient,
    DeadlineExceededError,
    InvalidRequestError,
    Result,
    RfadClient,
    ServerError,
    UnavailableError,
    build_request,
)
from rfad.client.cli import main as client_cli
from rfad.client.request import infer_inputs
from rfad.contract import (
    CLASS_NAMES,
    DEFAULT_LIMITS,
    MAX_IMAGE_BYTES,
    MAX_SEED,
    PIPELINE_INPUTS,
    PIPELINE_MODEL,
    PIPELINE_OUTPUTS,
    SETTINGS_INPUTS,
)
from rfad.serving.launcher import TritonServer, free_port, free_ports

needs_triton = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None,
                                  reason='the nvidia-pytriton wheel is not installed (pip install "rfad[serve]")')

# --- The stand-in rfad_pipeline model --------------------------------------------------------------

# What the fake answers when a setting is absent (the contract's documented defaults).
FAKE_DEFAULTS = {"seed": 0, "steps": 40, "guidance_scale": 7.5, "controlnet_scale": 1.0, "candidates": 1,
                 "max_attempts": 5, "num_images": 1, "threshold": 0.5, "screen_at": None, "screen_threshold": None}

FAKE_PIPELINE = '''\
"""Stand-in for rfad_pipeline (client transport tests only): validates, then echoes a fake result."""
import io
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image

DEFAULTS = json.loads(%r)


class RequestError(ValueError):
    pass


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self.respond(request))
            except RequestError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as exc:  # what the real model does with a failed component
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def respond(self, request):
        def value(name, default=None):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return default if tensor is None else tensor.as_numpy().reshape(-1)[0]

        prompt = value("prompt", b"").decode("utf-8")
        if not prompt.strip():
            raise RequestError("prompt: must not be empty")
        product = Image.open(io.BytesIO(value("product_image")))
        if "A" not in product.getbands():
            raise RequestError(f"product_image: needs an alpha channel, got mode {product.mode}")
        if prompt == "crash":
            raise RuntimeError("unet: component failed (simulated)")
        if prompt.startswith("sleep "):
            # Like the real loop: check for cancellation between steps, so an abandoned request stops.
            end = time.monotonic() + float(prompt.split()[1])
            while time.monotonic() < end and not request.is_cancelled():
                time.sleep(0.02)
        s = {name: value(name, default) for name, default in DEFAULTS.items()}
        caption = value("caption", b"").decode("utf-8")
        negative = value("negative_prompt", b"").decode("utf-8")
        n = int(s["num_images"])
        screened = s["screen_at"] is not None
        images = []
        for i in range(n):
            colour = ((int(s["seed"]) + i) %% 256, int(s["steps"]) %% 256, len(caption) %% 256)
            buffer = io.BytesIO()
            Image.new("RGB", product.size, colour).save(buffer, format="PNG")
            images.append(buffer.getvalue())
        row = [s["threshold"], s["guidance_scale"] / 30, s["controlnet_scale"] / 2, s["candidates"] / 8,
               len(negative) / 100]
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("images", np.array(images, dtype=object)),
            pb_utils.Tensor("available", np.array([i %% 2 == 0 for i in range(n)], dtype=bool)),
            pb_utils.Tensor("probabilities", np.array([row] * n, dtype=np.float32).reshape(n, 5)),
            pb_utils.Tensor("seeds", np.array([int(s["seed"]) + i for i in range(n)], dtype=np.int64)),
            pb_utils.Tensor("attempts", np.array([s["max_attempts"]], dtype=np.int32)),
            # Screening on: one candidate reported screened (seed - 1, the step s, p = screen_threshold / 2).
            pb_utils.Tensor("screened_seeds", np.array([int(s["seed"]) - 1] if screened else [], dtype=np.int64)),
            pb_utils.Tensor("screened_steps", np.array([int(s["screen_at"] * s["steps"] + 0.5)] if screened else [],
                                                       dtype=np.int32)),
            pb_utils.Tensor("screened_p", np.array([s["screen_threshold"] / 2] if screened else [], dtype=np.float32)),
        ])
''' % json.dumps(FAKE_DEFAULTS)


def pipeline_config() -> str:
    """config.pbtxt of the stand-in, generated from the contract's tensors."""
    def tensor(spec) -> str:
        datatype = "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"
        optional = " optional: true" if spec.optional else ""
        return f'  {{ name: "{spec.name}" data_type: {datatype} dims: [ {", ".join(map(str, spec.shape))} ]{optional} }}'

    inputs = ",\n".join(tensor(s) for s in PIPELINE_INPUTS)
    outputs = ",\n".join(tensor(s) for s in PIPELINE_OUTPUTS)
    return (f'name: "{PIPELINE_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n'
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            "instance_group [ { kind: KIND_CPU count: 1 } ]\n")


def png(mode: str = "RGBA", size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 30, 30, 255) if mode == "RGBA" else (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PRODUCT = png()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The stand-in served by a real Triton server, started while a client is already retrying.

    A client request is sent BEFORE the server starts, on the port the server will take: it
    must ride out UNAVAILABLE with its backoff and succeed once the server is up (the
    restart case). Its outcome is kept as ``server.early`` for the test that checks it.
    """
    repo = tmp_path_factory.mktemp("repo")
    (repo / PIPELINE_MODEL / "1").mkdir(parents=True)
    (repo / PIPELINE_MODEL / "config.pbtxt").write_text(pipeline_config())
    (repo / PIPELINE_MODEL / "1" / "model.py").write_text(FAKE_PIPELINE)
    grpc_port, http_port, metrics_port = free_ports(3)
    early = {}

    def early_request():
        started = time.monotonic()
        try:
            early["result"] = RfadClient(f"127.0.0.1:{grpc_port}", retries=8, backoff_s=0.25).generate(
                PRODUCT, "early bird", seed=11)
        except Exception as exc:  # noqa: BLE001 - handed to the test, which reports it
            early["error"] = exc
        early["elapsed_s"] = time.monotonic() - started

    thread = threading.Thread(target=early_request)
    thread.start()
    time.sleep(0.5)  # the request has met a closed port by now
    server = TritonServer(repo, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, exit_timeout_s=2)
    try:
        server.start()
        thread.join(60)
        server.early = early
        yield server
    finally:
        server.stop()
        thread.join(60)


@pytest.fixture(scope="module")
def client(server):
    with RfadClient(server.grpc_url, retries=0, timeout_s=60) as rfad:
        yield rfad


# --- Without a server ------------------------------------------------------------------------------

def test_client_imports_without_torch_diffusers_transformers_or_pillow():
    code = ("import sys\n"
            "for name in ('torch', 'diffusers', 'transformers'):\n"
            "    sys.modules[name] = None  # any import of them raises ImportError\n"
            "import rfad.client, rfad.client.cli\n"
            "from rfad.client import RfadClient, AsyncRfadClient, build_request\n"
            "build_request(b'png', 'ad', seed=3, candidates=2, threshold=0.5)  # the settings' checks too\n"
            "assert 'PIL' not in sys.modules, 'Pillow must stay optional'\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("change, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * (DEFAULT_LIMITS.prompt_chars + 1)}, "prompt"),
    ({"caption": "x" * (DEFAULT_LIMITS.prompt_chars + 1)}, "caption"),
    ({"negative_prompt": 7}, "negative_prompt"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"guidance_scale": math.nan}, "guidance_scale"),
    ({"controlnet_scale": 2.5}, "controlnet_scale"),
    ({"seed": -1}, "seed"),
    ({"candidates": 9}, "candidates"),
    ({"max_attempts": 21}, "max_attempts"),
    ({"num_images": 0}, "num_images"),
    ({"threshold": True}, "threshold"),
    ({"product": b""}, "product_image"),
    ({"product": b"x" * (MAX_IMAGE_BYTES + 1)}, "product_image"),
    ({"product": "/no/such/product.png"}, "product_image"),
    ({"product": 42}, "product_image"),
])
def test_invalid_requests_are_refused_locally_naming_the_field(change, field):
    arguments = {"product": PRODUCT, "prompt": "on a marble table", **change}
    # A closed port: the error must come before any attempt to connect.
    client = RfadClient(f"127.0.0.1:{free_port()}", retries=3, backoff_s=1.0)
    started = time.monotonic()
    with pytest.raises(InvalidRequestError) as info:
        client.generate(arguments.pop("product"), **arguments)
    assert time.monotonic() - started < 0.5
    assert str(info.value).startswith(field) and info.value.local and info.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("settings, seeds", [
    ({"candidates": 2, "max_attempts": 2}, 4),
    ({}, 5),  # unset: the server's defaults, 1 candidate x 5 attempts
    ({"num_images": 8, "max_attempts": 1}, 8),  # without a judge the server draws 8 to return 8
])
def test_seeds_near_the_top_of_their_range_are_refused_locally(settings, seeds):
    largest = MAX_SEED - seeds + 1
    assert build_request(PRODUCT, "ad", seed=largest, **settings)["seed"].tolist() == [largest]
    client = RfadClient(f"127.0.0.1:{free_port()}", retries=3, backoff_s=1.0)  # nothing listens: local refusal
    with pytest.raises(InvalidRequestError) as info:
        client.generate(PRODUCT, "ad", seed=largest + 1, **settings)
    assert info.value.local and info.value.status == "INVALID_ARGUMENT"
    assert str(info.value).startswith(f"seed: {largest + 1} is too large for {seeds} candidate seeds")
    assert str(info.value).endswith(f"the largest seed allowed for this request is {largest}")


def test_unknown_setting_is_refused():
    with pytest.raises(InvalidRequestError, match="eta_prime: not a request field"):
        build_request(PRODUCT, "ad", eta_prime=0.1)


def test_request_tensors_follow_the_contract_exactly():
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import deserialize_bytes_tensor

    # The largest seed 2 candidates x 3 attempts with screening allow: INT64 carries it whole.
    # Screened at step 4 of 7, one refill per slot: 2 x 2 x 3 seeds.
    values = {"seed": MAX_SEED - 11, "steps": 7, "guidance_scale": 5.5, "controlnet_scale": 0.25, "candidates": 2,
              "max_attempts": 3, "num_images": 2, "threshold": 0.75, "screen_at": 0.5, "screen_threshold": 0.25}
    assert set(values) == set(SETTINGS_INPUTS)
    inputs = infer_inputs(build_request(PRODUCT, "a prompt", caption="red bottle", negative_prompt="blurry",
                                        **values), grpcclient)
    assert [i.name() for i in inputs] == [spec.name for spec in PIPELINE_INPUTS]  # all of them, contract order
    for tensor, spec in zip(inputs, PIPELINE_INPUTS):
        assert tensor.datatype() == spec.datatype and tuple(tensor.shape()) == spec.shape, spec.name
        raw = tensor._get_content()
        if spec.datatype == "BYTES":
            decoded = deserialize_bytes_tensor(raw)[0]
            expected = {"product_image": PRODUCT, "prompt": b"a prompt", "caption": b"red bottle",
                        "negative_prompt": b"blurry"}[spec.name]
            assert decoded == expected
        else:
            dtype = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32}[spec.datatype]
            assert np.frombuffer(raw, dtype=dtype)[0] == np.asarray(values[spec.name], dtype=dtype)

    # Left out when not given: the server applies its defaults. Required inputs only.
    minimal = build_request(PRODUCT, "a prompt")
    assert list(minimal) == [spec.name for spec in PIPELINE_INPUTS if not spec.optional]


def test_the_api_covers_the_contract():
    generate = inspect.signature(RfadClient.generate).parameters
    assert set(SETTINGS_INPUTS) <= set(generate)
    assert inspect.signature(AsyncRfadClient.generate) == inspect.signature(RfadClient.generate)
    assert inspect.iscoroutinefunction(AsyncRfadClient.generate)
    fields = [f.name for f in dataclasses.fields(Result)]
    assert fields == [spec.name for spec in PIPELINE_OUTPUTS] + ["latency_s", "request_id", "tries"]
    assert Result.class_names == CLASS_NAMES


def test_result_helpers(tmp_path):
    outputs = {"images": np.array([b"img0", b"img1", b"img2"], dtype=object),
               "available": np.array([False, True, True]),
               "probabilities": np.array([[0.9, 0.1, 0, 0, 0], [0.6, 0.4, 0, 0, 0], [0.7, 0, 0.3, 0, 0]], np.float32),
               "seeds": np.array([4, 5, 6], dtype=np.int64), "attempts": np.array([2], dtype=np.int32),
               "screened_seeds": np.array([], np.int64), "screened_steps": np.array([], np.int32),
               "screened_p": np.array([], np.float32)}
    result = Result.from_outputs(outputs, latency_s=0.5)
    assert result.attempts == 2 and result.seeds == [4, 5, 6] and result.available == [False, True, True]
    assert result.best_index == 2 and result.best == b"img2"  # Available beats a higher p(Available)
    assert result.labels == ["Available", "Available", "Available"]
    assert result.verdicts()[2]["Size Mismatch"] == pytest.approx(0.3)
    paths = result.save(tmp_path / "out")
    assert [p.name for p in paths] == ["image-0.png", "image-1.png", "image-2.png"]
    assert paths[1].read_bytes() == b"img1"
    json.dumps(result.summary())
    with pytest.raises(ServerError, match="lacks the output 'seeds'"):
        Result.from_outputs({k: v for k, v in outputs.items() if k != "seeds"})
    with pytest.raises(ServerError, match="malformed"):
        Result.from_outputs({**outputs, "seeds": outputs["seeds"][:2]})
    screened = {**outputs, "screened_seeds": np.array([1, 3], dtype=np.int64),
                "screened_steps": np.array([10, 10], dtype=np.int32), "screened_p": np.array([0.1, 0.2], np.float32)}
    assert Result.from_outputs(screened).screened == [{"seed": 1, "step": 10, "p_available": pytest.approx(0.1)},
                                                      {"seed": 3, "step": 10, "p_available": pytest.approx(0.2)}]
    with pytest.raises(ServerError, match="lacks the output 'screened_seeds'"):
        Result.from_outputs({k: v for k, v in outputs.items() if k != "screened_seeds"})
    with pytest.raises(ServerError, match="malformed response: 2 screened seeds, 2 steps, 1 p values"):
        Result.from_outputs({**screened, "screened_p": screened["screened_p"][:1]})


def test_unavailable_server_is_retried_with_backoff_then_reported():
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        RfadClient(url, retries=2, backoff_s=0.2).generate(PRODUCT, "ad")
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3.0  # 0.2 + 0.4 s of backoff, plus three fast connection refusals
    assert info.value.status == "UNAVAILABLE" and "after 3 attempt(s)" in str(info.value)

    started = time.monotonic()
    with pytest.raises(UnavailableError, match="leaves no time"):
        RfadClient(url, retries=5, backoff_s=1.0).generate(PRODUCT, "ad", deadline_s=0.5)
    assert time.monotonic() - started < 0.5  # does not sleep past its deadline


# --- Against the real server --------------------------------------------------------------------

@needs_triton
def test_a_request_sent_before_the_server_started_succeeds_once_it_is_up(server):
    assert "error" not in server.early, server.early.get("error")
    result = server.early["result"]
    assert result.seeds == [11] and server.early["elapsed_s"] > 0.5


@needs_triton
def test_generate_carries_every_field_both_ways(client):
    result = client.generate(PRODUCT, "on a marble table", caption="red bottle", negative_prompt="blurry",
                             seed=40, steps=12, guidance_scale=6.0, controlnet_scale=0.5, candidates=4,
                             max_attempts=3, num_images=3, threshold=0.25)
    assert result.seeds == [40, 41, 42] and result.attempts == 3 and result.available == [True, False, True]
    assert np.allclose(result.probabilities, [[0.25, 0.2, 0.25, 0.5, 0.06]] * 3)
    assert len(result.images) == 3 and result.latency_s > 0
    first = Image.open(io.BytesIO(result.images[1]))
    assert first.size == (24, 16) and first.getpixel((0, 0)) == (41, 12, len("red bottle"))
    assert result.screened == []
    screened = client.generate(PRODUCT, "ad", seed=40, steps=12, screen_at=0.25, screen_threshold=0.5)
    assert screened.screened == [{"seed": 39, "step": 3, "p_available": 0.25}]

    defaults = client.generate(Image.open(io.BytesIO(PRODUCT)), "ad")  # a PIL image is encoded as PNG
    assert defaults.seeds == [FAKE_DEFAULTS["seed"]] and defaults.attempts == FAKE_DEFAULTS["max_attempts"]
    assert np.allclose(defaults.probabilities[0][:3], [FAKE_DEFAULTS["threshold"], FAKE_DEFAULTS["guidance_scale"] / 30,
                                                       FAKE_DEFAULTS["controlnet_scale"] / 2])
    assert client.is_ready() and client.health()["server_version"]


@needs_triton
def test_invalid_argument_from_the_server_is_not_retried_and_serving_goes_on(server):
    client = RfadClient(server.grpc_url, retries=3, backoff_s=1.0)
    started = time.monotonic()
    with pytest.raises(InvalidRequestError) as info:
        client.generate(png("RGB"), "ad")  # only the server can see that there is no alpha
    assert time.monotonic() - started < 1.0
    assert info.value.status == "INVALID_ARGUMENT" and not info.value.local
    assert str(info.value) == "product_image: needs an alpha channel, got mode RGB"

    with pytest.raises(ServerError) as info:
        client.generate(PRODUCT, "crash")
    assert info.value.status == "INTERNAL" and "unet: component failed" in str(info.value)
    assert client.generate(PRODUCT, "ad", seed=1).seeds == [1]


@needs_triton
def test_deadline_exceeded_abandons_the_request_on_the_server(client):
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        client.generate(PRODUCT, "sleep 6", deadline_s=0.5)
    assert time.monotonic() - started < 3.0 and info.value.status == "DEADLINE_EXCEEDED"
    # The model has one instance: had the abandoned request kept sleeping, this one would wait
    # for the rest of its 6 s. It stopped when the request was cancelled.
    started = time.monotonic()
    assert client.generate(PRODUCT, "ad", seed=3).seeds == [3]
    assert time.monotonic() - started < 3.0


@needs_triton
def test_async_client_runs_requests_concurrently_with_the_same_errors(server):
    async def scenario():
        async with AsyncRfadClient(server.grpc_url, retries=0) as client:
            assert await client.is_ready()
            results = await asyncio.gather(*(client.generate(PRODUCT, "ad", seed=i, steps=2) for i in range(4)))
            with pytest.raises(InvalidRequestError, match="alpha"):
                await client.generate(png("RGB"), "ad")
            with pytest.raises(DeadlineExceededError):
                await client.generate(PRODUCT, "sleep 4", deadline_s=0.3)
            return results

    results = asyncio.run(scenario())
    assert [r.seeds for r in results] == [[0], [1], [2], [3]]


# --- The CLI ---------------------------------------------------------------------------------------

@needs_triton
def test_cli_generate_writes_images_and_result(server, tmp_path):
    product = tmp_path / "product.png"
    product.write_bytes(PRODUCT)
    out = tmp_path / "out"
    result = CliRunner().invoke(client_cli, ["generate", "--url", server.grpc_url, "--product", str(product),
                                             "--prompt", "ad", "--caption", "mug", "--seed", "5", "--num-images",
                                             "2", "--guidance-scale", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and "2 image(s)" in result.output and "1 available" in result.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["images"] == ["image-0.png", "image-1.png"] and summary["seeds"] == [5, 6]
    assert summary["request"]["guidance_scale"] == 3.0 and set(summary["probabilities"][0]) == set(CLASS_NAMES)
    assert Image.open(out / "image-1.png").getpixel((0, 0)) == (6, 40, 3)

    failed = CliRunner().invoke(client_cli, ["generate", "--url", server.grpc_url, "--product", str(product),
                                             "--prompt", "ad", "--steps", "0", "--out", str(tmp_path / "x")])
    assert failed.exit_code == 1 and failed.output.strip().count("\n") == 0
    assert "INVALID_ARGUMENT: steps: 0 is outside" in failed.output


@needs_triton
def test_cli_batch_runs_jobs_concurrently_and_summarises(server, tmp_path):
    (tmp_path / "p.png").write_bytes(PRODUCT)
    (tmp_path / "rgb.png").write_bytes(png("RGB"))
    jobs = [{"id": "a", "product": "p.png", "prompt": "ad", "seed": 1, "max_attempts": 2},
            {"product": str(tmp_path / "p.png"), "prompt": "ad", "num_images": 2, "max_attempts": 2},
            {"id": "c", "product": "p.png", "prompt": "ad", "max_attempts": 1},
            {"id": "bad-steps", "product": "p.png", "prompt": "ad", "steps": 999},
            {"id": "no-alpha", "product": "rgb.png", "prompt": "ad"}]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(client_cli, ["batch", "--url", server.grpc_url, "--input",
                                             str(tmp_path / "jobs.jsonl"), "--out", str(out), "--concurrency", "3"])
    assert result.exit_code == 1, result.output  # some jobs failed
    assert "5 job(s)" in result.stdout and "3 done, 2 failed (INVALID_ARGUMENT: 2)" in result.stdout
    assert "1: 1, 2: 2" in result.stdout  # attempts histogram
    assert "rfad batch" in result.stderr  # the progress bar
    records = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(records) == {"a", "00002", "c", "bad-steps", "no-alpha"}
    assert records["a"]["seeds"] == [1] and (out / "a" / "image-0.png").is_file()
    assert records["00002"]["images"] == ["00002/image-0.png", "00002/image-1.png"]
    assert records["bad-steps"]["error"]["local"] and records["bad-steps"]["error"]["message"].startswith("steps")
    assert records["no-alpha"]["error"] == {"type": "InvalidRequestError", "status": "INVALID_ARGUMENT",
                                            "local": False, "message": "product_image: needs an alpha channel, "
                                                                       "got mode RGB"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attempts_histogram"] == {"1": 1, "2": 2} and summary["images"] == 4

    (tmp_path / "typo.jsonl").write_text('{"product": "p.png", "prompt": "ad", "stpes": 3}\n')
    typo = CliRunner().invoke(client_cli, ["batch", "--url", server.grpc_url, "--input",
                                           str(tmp_path / "typo.jsonl"), "--out", str(tmp_path / "o2")])
    assert typo.exit_code == 1 and "typo.jsonl:1: unknown field(s) stpes" in typo.output


def test_cli_health_and_a_down_server(tmp_path):
    url = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(client_cli, ["health", "--url", url])
    assert result.exit_code == 1 and f"{url} is not ready: UNAVAILABLE" in result.output
    assert result.output.strip().count("\n") == 0
    (tmp_path / "p.png").write_bytes(PRODUCT)
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"product": "p.png", "prompt": "ad"}) + "\n")
    batch = CliRunner().invoke(client_cli, ["batch", "--url", url, "--input", str(tmp_path / "jobs.jsonl"),
                                            "--out", str(tmp_path / "out")])
    assert batch.exit_code == 1 and "is not ready" in batch.output


@needs_triton
def test_cli_health_of_a_ready_server(server):
    result = CliRunner().invoke(client_cli, ["health", "--url", server.grpc_url, "--wait", "5"])
    assert result.exit_code == 0 and f"{server.grpc_url} ready: Triton 2." in result.output
