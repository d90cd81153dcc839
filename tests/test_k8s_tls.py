"""`rfad-export k8s` with TLS at Triton: the Secret mounted and passed to Triton, probes unchanged,
the NetworkPolicy closing plain HTTP to clients, cert-manager's Certificate (validated against the
CRD schema of cert-manager v1.21.1, strictly), the restricted header's value only in a Secret."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from test_k8s import IMAGE, JETSON, _strict, by_kind, documents, export_dir, validate, write

from rfad.client.cli import main as client_cli
from rfad.client.security import HEADERS_ENV, headers_from_environment
from rfad.export.cli import main as export_cli
from rfad.export.k8s_tls import CLIENT_HEADERS_ENV

CERTIFICATE_SCHEMA = Path(__file__).parent / "data" / "cert-manager-v1.21.1-certificate-v1.schema.json.gz"
CERTIFICATE_VALIDATOR = jsonschema.Draft4Validator(_strict(json.loads(gzip.decompress(CERTIFICATE_SCHEMA.read_bytes()))))
SECURE = ["--namespace", "ads", "--tls-secret", "rfad-tls", "--tls-mutual", "--cert-manager-issuer", "corp-ca",
          "--cert-manager-issuer-kind", "ClusterIssuer", "--restrict-secret", "rfad-token"]


def validate_any(document: dict) -> None:
    if document["kind"] == "Certificate":
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in CERTIFICATE_VALIDATOR.iter_errors(document)]
        assert not errors, errors
    else:
        validate(document)


def test_tls_manifests_mount_the_secret_keep_the_probes_and_close_plain_http(tmp_path):
    out = write(tmp_path, "datacenter", "s3://models/rfad/repo", *SECURE)
    docs = documents(out)
    for items in docs.values():
        for item in items:
            validate_any(item)
    kinds = by_kind(docs)
    deployments = kinds["Deployment"]
    assert len(deployments) == 2  # one per GPU model of the profile, each secured the same way
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        server = pod["containers"][0]
        assert {"name": "tls", "secret": {"secretName": "rfad-tls", "defaultMode": 0o440}} in pod["volumes"]
        assert {"name": "tls", "mountPath": "/etc/rfad/tls", "readOnly": True} in server["volumeMounts"]
        for flag in ("--grpc-use-ssl=true", "--grpc-server-cert=/etc/rfad/tls/tls.crt",
                     "--grpc-server-key=/etc/rfad/tls/tls.key", "--grpc-use-ssl-mutual=true",
                     "--grpc-root-cert=/etc/rfad/tls/ca.crt"):
            assert flag in server["args"]
        # The header's value: a Secret, expanded by Kubernetes into the arguments; health stays open.
        assert {"name": "RFAD_RESTRICT_VALUE",
                "valueFrom": {"secretKeyRef": {"name": "rfad-token", "key": "value"}}} in server["env"]
        restricted = [arg for arg in server["args"] if "restricted" in arg]
        assert [arg.split("=", 1)[0] for arg in restricted] == ["--grpc-restricted-protocol", "--http-restricted-api"]
        assert all(arg.endswith(":rfad-key=$(RFAD_RESTRICT_VALUE)") and "health" not in arg for arg in restricted)
        # Probes: plain HTTP health, as before (Triton's HTTP has no TLS; kubelet probes are not pod traffic).
        assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
        assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
        # The drain of issue 29 beside TLS: the preStop reads the plain metrics port, the drain file is set.
        assert server["lifecycle"]["preStop"]["exec"]["command"][:3] == ["python3", "-m", "rfad.serving.draining"]
        assert any(e["name"] == "RFAD_DRAIN_FILE" for e in server["env"])
    [policy] = kinds["NetworkPolicy"]
    clients, monitoring = policy["spec"]["ingress"]
    assert [p["port"] for p in clients["ports"]] == [8001] and [p["port"] for p in monitoring["ports"]] == [8002]
    [certificate] = kinds["Certificate"]
    spec = certificate["spec"]
    assert spec["secretName"] == "rfad-tls" and spec["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer",
                                                                      "group": "cert-manager.io"}
    assert {"rfad.ads.svc", "rfad-pods.ads.svc.cluster.local"} <= set(spec["dnsNames"])
    assert "certificate.yaml" in yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
    readme = (out / "README.md").read_text()
    for deployment in deployments:
        assert f"rollout restart deployment/{deployment['metadata']['name']}`" in readme
    assert "--cert client.crt --key client.key" in readme
    assert "--url dns:///rfad-pods:8001 --tls-server-name rfad-pods --ca ca.crt" in readme
    # Without TLS clients keep both inference ports, and nothing of the above is written.
    (tmp_path / "plain").mkdir()
    plain = by_kind(documents(write(tmp_path / "plain", "datacenter")))
    assert [p["port"] for p in plain["NetworkPolicy"][0]["spec"]["ingress"][0]["ports"]] == [8000, 8001]
    assert "Certificate" not in plain and not any("ssl" in a for a in plain["Deployment"][0]["spec"]["template"]
                                                  ["spec"]["containers"][0]["args"])


def _expanded(env: list[dict], secrets: dict[str, str]) -> dict[str, str]:
    """A container's environment as Kubernetes sets it: secretKeyRef values read, $(VAR) of the
    variables listed before expanded."""
    values: dict[str, str] = {}
    for item in env:
        if "valueFrom" in item:
            ref = item["valueFrom"].get("secretKeyRef")
            values[item["name"]] = secrets[ref["name"]] if ref else ""
        else:
            values[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)),
                                          item["value"])
    return values


def test_the_catalog_job_and_kserve_reach_the_secured_fleet(tmp_path):
    """The fleet's own clients get what the servers ask for: the catalog shards mount the client
    Secret, verify the headless Service's name on every pod (dns:/// reaches them by IP address) and
    send the header from the Secret without it in their arguments; KServe's predictors serve TLS."""
    assert CLIENT_HEADERS_ENV == HEADERS_ENV  # the export stage does not import the client
    out = write(tmp_path, "datacenter", "s3://models/rfad/repo", *SECURE, "--client-tls-secret", "rfad-client-tls")
    docs = documents(out)
    for items in docs.values():
        for item in items:
            validate_any(item)
    kinds = by_kind(docs)
    catalog = next(j for j in kinds["Job"] if j["metadata"]["name"] == "rfad-catalog")
    pod = catalog["spec"]["template"]["spec"]
    [batch] = pod["containers"]
    command = batch["command"]
    assert {"name": "client-tls", "secret": {"secretName": "rfad-client-tls", "defaultMode": 0o440}} in pod["volumes"]
    assert {"name": "client-tls", "mountPath": "/etc/rfad/client-tls", "readOnly": True} in batch["volumeMounts"]
    flags = {token: value for token, value in zip(command, command[1:]) if token.startswith("--")}
    assert flags["--url"] == "dns:///rfad-pods:8001" and flags["--tls-server-name"] == "rfad-pods"
    assert (flags["--ca"], flags["--cert"], flags["--key"]) == (
        "/etc/rfad/client-tls/ca.crt", "/etc/rfad/client-tls/tls.crt", "/etc/rfad/client-tls/tls.key")
    batch_options = {opt for param in client_cli.commands["batch"].params
                     for opt in (*param.opts, *param.secondary_opts)}
    assert {token for token in command if token.startswith("--")} <= batch_options
    # The name verified is one the Certificate carries; the header comes from the Secret as rfad-client reads it.
    [certificate] = kinds["Certificate"]
    assert {"rfad-pods", "rfad-kserve-grpc"} <= set(certificate["spec"]["dnsNames"])
    environment = _expanded(batch["env"], {"rfad-token": "tok-123"})
    assert headers_from_environment(environment) == {"triton-grpc-protocol-rfad-key": "tok-123"}
    assert not any("RFAD_RESTRICT_VALUE" in token for token in command)
    # KServe: each InferenceService's model container has the Secret and Triton's TLS flags.
    for isvc in kinds["InferenceService"]:
        predictor = isvc["spec"]["predictor"]
        assert {"name": "tls", "secret": {"secretName": "rfad-tls", "defaultMode": 0o440}} in predictor["volumes"]
        assert {"--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true"} <= set(predictor["model"]["args"])
    readme = (out / "README.md").read_text()
    assert "--url dns:///rfad-kserve-grpc:9000 --tls-server-name rfad-kserve-grpc" in readme


def test_under_tls_without_a_client_secret_no_catalog_job_is_written_and_the_readme_says_why(tmp_path):
    out = write(tmp_path, "datacenter", "s3://models/rfad/repo", "--tls-secret", "rfad-tls")
    jobs = {j["metadata"]["name"] for j in by_kind(documents(out))["Job"]}
    assert not {"rfad-catalog", "rfad-catalog-merge"} & jobs
    assert "No catalog Job was written" in (out / "README.md").read_text()
    # A header alone needs no client Secret: the shards send it.
    (tmp_path / "header").mkdir()
    kinds = by_kind(documents(write(tmp_path / "header", "datacenter", "s3://m/r", "--restrict-secret", "rfad-token")))
    [batch] = next(j for j in kinds["Job"] if j["metadata"]["name"] == "rfad-catalog")["spec"]["template"]["spec"][
        "containers"]
    assert "--ca" not in batch["command"] and "--tls-server-name" not in batch["command"]
    environment = _expanded(batch["env"], {"rfad-token": "t"})
    assert headers_from_environment(environment) == {"triton-grpc-protocol-rfad-key": "t"}


def test_the_certificate_schema_is_not_a_rubber_stamp(tmp_path):
    [certificate] = by_kind(documents(write(tmp_path, "edge", "s3://b/r", *SECURE)))["Certificate"]
    certificate["spec"]["dnsName"] = certificate["spec"].pop("dnsNames")
    with pytest.raises(AssertionError, match="dnsName"):
        validate_any(certificate)
    certificate["spec"]["dnsNames"] = certificate["spec"].pop("dnsName")
    certificate["spec"]["usages"] = ["server-auth"]
    with pytest.raises(AssertionError, match="server-auth"):
        validate_any(certificate)


@pytest.mark.parametrize("args, message", [
    (["--tls-mutual"], "--tls-mutual needs --tls-secret"),
    (["--cert-manager-issuer", "corp-ca"], "--cert-manager-issuer needs --tls-secret"),
    (["--tls-secret", "Bad_Name"], "--tls-secret: 'Bad_Name' is not a Kubernetes object name"),
    (["--client-tls-secret", "rfad-client-tls"], "--client-tls-secret needs --tls-secret"),
    (["--restrict-secret", "token", "--restrict-header", "X Key"], "--restrict-header: 'X Key' is not a lowercase"),
])
def test_bad_tls_flags_are_one_line_errors(tmp_path, args, message):
    result = CliRunner().invoke(export_cli, ["k8s", "--repo-uri", "s3://b/r", "--image", IMAGE, "--profile", "edge",
                                             "--onnx", str(export_dir(tmp_path)), "--gpu-product", JETSON,
                                             "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
