"""Shared fixtures: the tiny model zoo (built once per session) and hand-drawn product cut-outs."""

from __future__ import annotations

import pytest

from rfad.tiny.products import draw_product


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """The tiny zoo written to disk through the real save path; returns its folder."""
    from rfad.tiny.zoo import build_tiny_zoo

    root = tmp_path_factory.mktemp("zoo")
    build_tiny_zoo(root, seed=0)
    return root


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

    out = tmp_path_factory.mktemp("onnx")
    export_onnx(ModelSet.resolve(tiny_zoo), out, echo=lambda *_: None)
    return out


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
