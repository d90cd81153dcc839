"""What a team running rfad behind an ad system relies on, on real Triton servers (tiny zoo):
faults in component models, a server killed and restarted, cancellation, hostile input, a short
soak, and no unsafe deserialisation anywhere in the package."""

from __future__ import annotations

import ast
import io
import math
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from PIL import Image

from rfad.canvas import CanvasError, CanvasSpec, prepare_canvas
from rfad.client import RfadClient, ServerError
from rfad.export.triton_repo import write_triton_repo
from rfad.serving.launcher import TritonServer, free_ports

SIZE = 128
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- faulty graphs


def _rewire(path: Path, output: str, build) -> None:
    """Replace graph output ``output`` of the ONNX file at ``path`` by ``build(graph, raw_name)``'s
    result: real graph surgery on the exported model, so the fault happens inside onnxruntime."""
    model = onnx.load(str(path))
    graph = model.graph
    raw = output + "_before_fault"
    for node in graph.node:
        node.output[:] = [raw if name == output else name for name in node.output]
    del graph.value_info[:]
    graph.node.extend(build(raw, output))
    onnx.save(model, str(path))


def _batch_at_least(raw: str, n: int, tag: str) -> list:
    """Nodes computing bool ``{tag}_cond`` = (batch size of ``raw``) >= n."""
    return [
        helper.make_node("Shape", [raw], [f"{tag}_shape"]),
        helper.make_node("Constant", [], [f"{tag}_zero"], value=helper.make_tensor("z", TensorProto.INT64, [1], [0])),
        helper.make_node("Gather", [f"{tag}_shape", f"{tag}_zero"], [f"{tag}_batch"], axis=0),
        helper.make_node("Constant", [], [f"{tag}_n"], value=helper.make_tensor("n", TensorProto.INT64, [1], [n])),
        helper.make_node("GreaterOrEqual", [f"{tag}_batch", f"{tag}_n"], [f"{tag}_cond"]),
    ]


def nan_from_batch(n: int):
    """Output * (NaN if batch >= n else 1): a component that silently returns NaN for larger batches."""
    def build(raw: str, out: str) -> list:
        return _batch_at_least(raw, n, "nan") + [
            helper.make_node("Constant", [], ["nan_value"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [math.nan])),
            helper.make_node("Constant", [], ["one_value"], value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("Where", ["nan_cond", "nan_value", "one_value"], ["nan_factor"]),
            helper.make_node("Mul", [raw, "nan_factor"], [out]),
        ]
    return build


def fail_from_batch(n: int):
    """Reshape to an impossible shape when batch >= n: onnxruntime raises inside the component."""
    def build(raw: str, out: str) -> list:
        return _batch_at_least(raw, n, "fail") + [
            helper.make_node("Constant", [], ["fail_extra"], value=helper.make_tensor("e", TensorProto.INT64, [4], [0, 0, 0, 1])),
            helper.make_node("Add", ["fail_shape", "fail_extra"], ["fail_bad_shape"]),
            helper.make_node("Where", ["fail_cond", "fail_bad_shape", "fail_shape"], ["fail_target"]),
            helper.make_node("Reshape", [raw, "fail_target"], [out]),
        ]
    return build


@pytest.fixture(scope="module")
def product(tiny_zoo):
    return (tiny_zoo / "samples" / "bottle.png").read_bytes()


@pytest.fixture(scope="module", params=["ensemble", "components"])
def faulty_server(request, tiny_onnx, tmp_path_factory):
    """A repository whose depth model returns NaN from batch 2 and whose VAE decoder raises from batch 3,
    its pipeline judging through the rfad_judge ensemble or through the component models."""
    onnx_dir = tmp_path_factory.mktemp("faulty") / "onnx"
    shutil.copytree(tiny_onnx, onnx_dir)
    _rewire(onnx_dir / "depth" / "model.onnx", "depth_map", nan_from_batch(2))
    _rewire(onnx_dir / "vae_decoder" / "model.onnx", "images", fail_from_batch(3))
    repo = write_triton_repo(onnx_dir, onnx_dir.parent / "repo", canvas_size=SIZE, pipeline_judge=request.param)
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
        yield server


def test_a_failing_component_fails_only_its_request_and_names_itself(faulty_server, product):
    client = RfadClient(faulty_server.grpc_url, retries=0)
    ok = dict(steps=2, max_attempts=1, threshold=0.0)
    assert client.generate(product, "ad", candidates=1, **ok).attempts == 1
    with pytest.raises(ServerError) as info:  # the decoder runs after every denoising step: mid-request
        client.generate(product, "ad", candidates=3, **ok)
    assert info.value.status == "INTERNAL" and "component 'vae_decoder' failed" in str(info.value)
    assert client.generate(product, "ad", candidates=1, **ok).attempts == 1  # the server goes on serving

    # NaN from a component is caught where it comes back, never turned into an image or a verdict.
    with pytest.raises(ServerError) as info:
        client.generate(product, "ad", candidates=2, **ok)
    assert "component 'depth' returned non-finite values in 'depth_map'" in str(info.value)
    with pytest.raises(ServerError, match="component 'depth' returned non-finite values in 'depth_map'"):
        client.judge([_png(np.zeros((SIZE, SIZE, 3), np.uint8))] * 2, product)
    assert client.generate(product, "ad", candidates=1, **ok).attempts == 1
    assert client.is_ready()


# ----------------------------------------------------------------------------- server restart


@pytest.fixture(scope="module")
def repo(tiny_repo):
    """The session's served repository (tests/conftest.py): the tiny export at a 128 px canvas."""
    return tiny_repo


def test_a_killed_and_restarted_server_is_retried_by_the_client(repo, product):
    grpc_port, http_port, metrics_port = free_ports(3)
    ports = dict(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
    first = TritonServer(repo, **ports).start()
    client = RfadClient(first.grpc_url, retries=8, backoff_s=0.5)
    assert client.generate(product, "ad", steps=1, max_attempts=1).attempts == 1
    first.process.kill()  # SIGKILL: no drain, no goodbye
    first.process.wait(30)
    first.stop()
    replacement: dict = {}

    def restart() -> None:
        time.sleep(1.0)
        replacement["server"] = TritonServer(repo, **ports).start()

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        started = time.monotonic()
        result = client.generate(product, "ad", seed=5, steps=1, max_attempts=1)  # UNAVAILABLE, retried
        assert result.seeds == [5] and time.monotonic() - started > 1.0
    finally:
        thread.join()
        if "server" in replacement:
            replacement["server"].stop()


# ----------------------------------------------------------------------------- cancellation


@pytest.fixture(scope="module")
def server(tiny_server):
    """The session's running server over it (tests/conftest.py)."""
    return tiny_server


def _metric(server, name: str, **labels) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_cancelled_request_stops_stepping_on_the_server(server, product):
    from rfad.client import DeadlineExceededError

    client = RfadClient(server.grpc_url, retries=0)
    assert client.generate(product, "ad", steps=3, max_attempts=1).attempts == 1
    before = _metric(server, "rfad_denoising_steps_total")
    cancelled_before = _metric(server, "rfad_requests_total", outcome="cancelled")
    with pytest.raises(DeadlineExceededError):
        client.generate(product, "ad", steps=150, max_attempts=1, deadline_s=1.0)
    time.sleep(2.0)  # more than enough for the server to notice between two steps
    after = _metric(server, "rfad_denoising_steps_total")
    time.sleep(1.0)
    assert _metric(server, "rfad_denoising_steps_total") == after  # nothing is running any more
    assert 0 < after - before < 150, (before, after)
    assert _metric(server, "rfad_requests_total", outcome="cancelled") == cancelled_before + 1


# ----------------------------------------------------------------------------- hostile input


def _png(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def _hostile_images() -> dict[str, bytes]:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (200, 30, 30, 255)
    palette = Image.fromarray(rgba).convert("P")
    palette.info["transparency"] = 0
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    sixteen = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(sixteen, format="PNG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 100, 200, 0)).save(cmyk, format="JPEG")
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # 400 Mpx, a few kB compressed
    huge_header = bytearray(_png(np.zeros((16, 16, 4), np.uint8)))
    huge_header[16:24] = (100000).to_bytes(4, "big") * 2  # IHDR claims 100000 x 100000
    return {"palette": buffer.getvalue(), "16-bit": sixteen.getvalue(), "cmyk-jpeg": cmyk.getvalue(),
            "bomb": bomb.getvalue(), "huge-header": bytes(huge_header),
            "zero-alpha": _png(np.zeros((64, 64, 4), np.uint8)), "truncated": _png(rgba)[:100]}


def _raw(server, tensors: dict, model: str = "rfad_pipeline") -> str:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    inputs = []
    for name, (datatype, array) in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    try:
        grpcclient.InferenceServerClient(server.grpc_url).infer(model, inputs, client_timeout=120)
    except InferenceServerException as exc:
        return str(exc.status()).removeprefix("StatusCode.")
    return "ok"


def _obj(*values) -> tuple[str, np.ndarray]:
    return "BYTES", np.array(list(values), dtype=np.object_)


def test_hostile_images_are_invalid_argument_or_served(server, product):
    outcomes = {}
    for name, data in _hostile_images().items():
        outcomes[name] = _raw(server, {"product_image": _obj(data), "prompt": _obj(b"ad"),
                                       "steps": ("INT32", np.array([1], np.int32))})
        judged = _raw(server, {"generated_image": _obj(data), "product_image": _obj(product)}, model="rfad_judge")
        assert judged in ("ok", "INVALID_ARGUMENT"), (name, judged)
    assert outcomes["palette"] == "ok"  # a palette PNG with a transparent index is a valid cut-out
    assert all(outcomes[n] == "INVALID_ARGUMENT" for n in ("16-bit", "cmyk-jpeg", "bomb", "huge-header", "zero-alpha",
                                                            "truncated")), outcomes
    assert RfadClient(server.grpc_url).is_ready()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["bytes", "prompt", "seed", "steps", "dtype", "shape", "utf8"]),
       blob=st.binary(min_size=0, max_size=2048), number=st.integers(min_value=-(2**63), max_value=2**63 - 1),
       text=st.text(min_size=0, max_size=50))
def test_random_requests_never_crash_hang_or_stop_the_server(server, product, kind, blob, number, text):
    tensors = {"product_image": _obj(product), "prompt": _obj(b"ad"), "steps": ("INT32", np.array([1], np.int32)),
               "max_attempts": ("INT32", np.array([1], np.int32))}
    if kind == "bytes":
        tensors["product_image"] = _obj(blob)
    elif kind == "prompt":
        tensors["prompt"] = _obj((text * 100_000)[:1_000_000].encode("utf-8"))  # up to a megabyte
    elif kind == "seed":
        tensors["seed"] = ("INT64", np.array([number], np.int64))
    elif kind == "steps":
        tensors["steps"] = ("INT32", np.array([number], np.int64).astype(np.int32))  # wraps to any int32
    elif kind == "dtype":
        tensors["steps"] = ("FP32", np.array([1.0], np.float32))
    elif kind == "shape":
        tensors["prompt"] = _obj(b"a", b"b")
    elif kind == "utf8":
        tensors["caption"] = _obj(blob)
    started = time.monotonic()
    outcome = _raw(server, tensors)
    assert outcome in ("ok", "INVALID_ARGUMENT"), (kind, outcome)
    assert time.monotonic() - started < 60


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(min_size=0, max_size=4096), width=st.integers(1, 300), height=st.integers(1, 300),
       mode=st.sampled_from(["RGBA", "LA", "RGB", "L", "P", "1", "I;16", "CMYK"]))
def test_canvas_in_process_raises_only_canvas_errors(blob, width, height, mode):
    for source in (blob, _encoded(mode, width, height, blob)):
        try:
            canvas = prepare_canvas(source, CanvasSpec(width=128, height=128))
        except CanvasError:
            continue
        assert canvas.init_image.shape == (128, 128, 3)


def _encoded(mode: str, width: int, height: int, seed_bytes: bytes) -> bytes:
    rng = np.random.default_rng(int.from_bytes(seed_bytes[:4].ljust(4, b"\0"), "little"))
    image = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    image = image.convert(mode) if mode != "I;16" else image.convert("L").convert("I;16")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mode == "CMYK" else "PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- soak (short)


def test_short_soak_holds_every_valid_request_and_rejects_every_invalid_one(server):
    from benchmarks.suite import soak

    report = soak.soak(server.grpc_url, server.process.pid, clients=4, requests=6, duration_s=120, size=SIZE,
                       echo=lambda *_: None)
    assert report["unexpected"] == [] and report["server_alive"], report
    assert report["valid_ok"] == report["valid"] > 0 and report["invalid_rejected"] == report["invalid"] > 0
    assert report["rss_growth_mib"] <= report["rss_growth_bound_mib"], report
    assert report["passed"]


# ----------------------------------------------------------------------------- safe loading


def test_no_unsafe_deserialisation_in_the_package():
    """pickle/marshal loads, or torch.load without weights_only=True, anywhere rfad reads files."""
    problems = []
    for folder in ("rfad", "trainer", "export", "client", "triton_repo", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                name = ast.unparse(node.func)
                if name in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "dill.load"):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
                if name.endswith("torch.load"):
                    safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                               for k in node.keywords)
                    if not safe:
                        problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True")
    assert problems == []


def test_models_cannot_be_loaded_or_unloaded_over_the_api(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    for call in (lambda: client.unload_model("rfad_pipeline"), lambda: client.load_model("rfad_pipeline")):
        with pytest.raises(InferenceServerException):  # "explicit model load / unload is not allowed"
            call()
    assert RfadClient(server.grpc_url).is_ready()
