"""Shared fixtures, each built once per session: the tiny model zoo, its ONNX export (fp32, and fp16
as the GPU profiles serve it), the served repository and a running Triton server over it; and
hand-drawn product cut-outs.

Under pytest-xdist (`make test` runs ``-n``), the folders (zoo, exports, repository) are built
once for the whole run by whichever worker asks first, the others waiting on a file lock; each
worker starts its own server over the shared repository.

Tests that stop, kill, break or reconfigure a server start their own; every other test that
talks to a served pipeline shares :func:`tiny_server` (its state between tests is the models'
and Triton's counters: read them as differences).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from rfad.tiny.products import draw_product

# The canvas side of the shared served repository (the tiny zoo's images are 128 px).
SERVED_SIZE = 128


def shared_folder(tmp_path_factory, name: str, build) -> Path:
    """``<run's temp>/<name>``, made by ``build(folder)`` once per run: under xdist, by the first
    worker that asks (the run's temp is the workers' common parent), the others waiting for it.
    A build that failed is retried by the next asker rather than reused."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory):
    """:func:`shared_folder` for a test module's own once-per-run folder: ``run_folder(name, build)``."""
    return lambda name, build: shared_folder(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """The tiny zoo written to disk through the real save path; returns its folder."""
    from rfad.tiny.zoo import build_tiny_zoo

    return shared_folder(tmp_path_factory, "zoo", lambda folder: build_tiny_zoo(folder, seed=0))


@pytest.fixture
def product_png(tmp_path):
    path = tmp_path / "product.png"
    draw_product("bottle").save(path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_zoo, tmp_path_factory):
    """Every component of the tiny zoo exported to ONNX (with the parity check), once per session."""
    from rfad.export.onnx_export import export_onnx
    from rfad.models.model_set import ModelSet

    return shared_folder(tmp_path_factory, "onnx",
                         lambda out: export_onnx(ModelSet.resolve(tiny_zoo), out, echo=lambda *_: None))


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Certificates made here for the TLS tests (cryptography; PEM files, EC P-256 keys, valid for a day):
    ``ca`` and ``other_ca``; ``server_cert``/``server_key`` signed by ``ca`` for localhost and 127.0.0.1;
    ``client_cert``/``client_key`` signed by ``ca``; ``rogue_cert``/``rogue_key`` signed by ``other_ca``."""
    import datetime
    import ipaddress
    from types import SimpleNamespace

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(name, issuer=None, ca=False, usage=None, names=()):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        signer_name, signer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        certificate = builder.sign(signer_key, hashes.SHA256())
        cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return certificate, key, cert_path, key_path

    ca, other_ca = issue("test-ca", ca=True), issue("other-ca", ca=True)
    server = issue("server", ca[:2], usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   names=(x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    client = issue("client", ca[:2], usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue = issue("rogue", other_ca[:2], usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return SimpleNamespace(ca=ca[2], other_ca=other_ca[2], server_cert=server[2], server_key=server[3],
                           client_cert=client[2], client_key=client[3], rogue_cert=rogue[2], rogue_key=rogue[3])


@pytest.fixture(scope="session")
def tiny_onnx_fp16(tiny_zoo, tmp_path_factory):
    """The served components exported in fp16, as the GPU profiles serve them, once per session, with
    every weight in external data (as an export of SD-1.5's sizes writes it: the threshold is 1 kB)."""
    from rfad.export.onnx_export import export_onnx
    from rfad.models.model_set import ModelSet

    return shared_folder(tmp_path_factory, "onnx-fp16",
                         lambda out: export_onnx(ModelSet.resolve(tiny_zoo), out, served="merged", fp16=True,
                                                 external_data_threshold=1000, echo=lambda *_: None))


@pytest.fixture(scope="session")
def tiny_repo(tiny_onnx, tmp_path_factory):
    """The tiny export as `rfad-export triton-repo` writes it for rfad-serve here (the cpu profile,
    python backend, the default judging route) at a 128 px canvas, once per session."""
    from rfad.export.triton_repo import write_triton_repo

    folder = shared_folder(tmp_path_factory, "repo",
                           lambda out: write_triton_repo(tiny_onnx, out / "repo", canvas_size=SERVED_SIZE))
    return folder / "repo"


@pytest.fixture(scope="session")
def tiny_server(tiny_repo):
    """A real Triton server (nvidia-pytriton's tritonserver) over :func:`tiny_repo` on free ports,
    started once per session and stopped at its end."""
    from rfad.serving.launcher import TritonServer

    with TritonServer(tiny_repo, grpc_port=0, http_port=0, metrics_port=0) as running:
        yield running


# The fixtures that export or serve: a test that uses one is in the slow tier, which `make test`
# runs second (the fast tier fails in minutes on what needs no model export or server);
# renamed_onnx is test_spec_rename's (a test in each tier had been exporting it again).
SLOW_FIXTURES = {"tiny_onnx", "tiny_onnx_fp16", "tiny_repo", "tiny_server", "renamed_onnx"}
# Tests over ~15 s on 2 cores that use none of them (`--durations` of the fast tier, 2026-12-07):
# whole demos, crash-and-resume runs, multi-process training; and the modules whose module fixture
# (a trained model set, a preview dataset and its judge) a slow test needs too, so that it is built
# once per run rather than once per tier.
SLOW_FILES = {"test_demo.py", "test_crash_safety.py", "test_miniworld_training.py", "test_screening_judge.py"}
SLOW_TESTS = {"test_two_processes_train_and_write_a_loadable_controlnet",
              "test_two_process_cpu_run_writes_a_loadable_model",
              "test_tiny_then_generate_writes_image_with_exact_product_pixels"}


def pytest_collection_modifyitems(items):
    for item in items:
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_FILES
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


# Tests that ask for a shared export by name at run time (request.getfixturevalue).
RUN_TIME_EXPORT_TESTS = {"test_written_repositories_check_for_every_profile_and_backend"}


def _waits_for_shared_exports(item) -> bool:
    """Whether ``item`` needs the run's shared exports."""
    return bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))) or item.originalname in RUN_TIME_EXPORT_TESTS


class ExportsFirstOrder:
    """Under pytest-xdist's worksteal, worker 0 starts on the first len/N selected tests and the
    others on the following chunks. The tests that need the shared exports are ordered so that
    worker 0's chunk is theirs (it builds the exports) and the next chunk starts with the tests
    that need none (whole demos, training runs, the image's pip resolves): at the slow tier's start
    that worker works instead of waiting on the build's lock. Order only: every test still runs.
    After the `-m` selection (trylast), so that the chunks are the selected tests'."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        if workers < 2:
            return
        shared = [item for item in items if _waits_for_shared_exports(item)]
        alone = [item for item in items if not _waits_for_shared_exports(item)]
        first = len(items) // workers
        items[:] = shared[:first] + alone + shared[first:]


def pytest_configure(config):
    config.pluginmanager.register(ExportsFirstOrder(), "rfad-exports-first-order")
