"""`rfad-export k8s`: every manifest validates against the Kubernetes schemas of a named version
(kubernetes-validate, strict: unknown fields are errors), the InferenceService against KServe's
CRD schema, every folder builds with kustomize, and the numbers come from the profile."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from rfad.contract import PIPELINE_MODEL
from rfad.deploy.profiles import PROFILES
from rfad.export.cli import main as export_cli
from rfad.export.k8s import KUBERNETES_VERSION
from rfad.export.k8s_serving import QUEUE_METRIC

KSERVE_SCHEMA = Path(__file__).parent / "data" / "kserve-v0.20.0-inferenceservice-v1beta1.schema.json.gz"
IMAGE = "registry.example/rfad:0.1.0"


def _strict(node):
    """A CRD schema as `kubectl apply --validate=strict` reads it: unknown fields are errors
    (CRD schemas prune them silently unless told otherwise)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


KSERVE_VALIDATOR = jsonschema.Draft4Validator(_strict(json.loads(gzip.decompress(KSERVE_SCHEMA.read_bytes()))))


def validate(document: dict) -> None:
    """Raise if ``document`` is not a valid object of its kind."""
    if document["kind"] == "InferenceService":
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in KSERVE_VALIDATOR.iter_errors(document)]
        assert not errors, errors
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def write(tmp_path, profile="datacenter", repo_uri="s3://models/rfad/repo", *extra):
    out = tmp_path / profile
    result = CliRunner().invoke(export_cli, ["k8s", "--repo-uri", repo_uri, "--image", IMAGE, "--profile", profile,
                                             "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


def documents(out: Path) -> dict[str, list[dict]]:
    return {str(p.relative_to(out)): list(yaml.safe_load_all(p.read_text())) for p in sorted(out.rglob("*.yaml"))
            if p.name not in ("kustomization.yaml", "prometheus-adapter-values.yaml")}


def by_kind(docs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for items in docs.values():
        for item in items:
            kinds.setdefault(item["kind"], []).append(item)
    return kinds


@pytest.mark.parametrize("profile", ["datacenter", "edge"])
def test_every_manifest_validates_and_takes_its_numbers_from_the_profile(tmp_path, profile):
    out = write(tmp_path, profile)
    docs = documents(out)
    for items in docs.values():
        for item in items:
            validate(item)
    kinds = by_kind(docs)
    declared = PROFILES[profile]
    [deployment] = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert "--model-control-mode=none" in server["args"]
    assert f"--backend-config=python,shm-default-byte-size={declared.shm.default_byte_size}" in server["args"]
    assert {p["containerPort"] for p in server["ports"]} == {8000, 8001, 8002}
    assert server["startupProbe"]["httpGet"]["path"] == server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == str(declared.kubernetes.gpus_per_pod)
    assert server["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": str(declared.shm.dev_shm_bytes)}
    # The repository is copied from the URI by the init container into a volume mounted read-only.
    [init] = pod["initContainers"]
    assert init["args"] == ["s3://models/rfad/repo", "/models"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    [hpa] = kinds["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (declared.kubernetes.min_replicas,
                                                                         declared.kubernetes.max_replicas)
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == QUEUE_METRIC
    # The adapter rule beside it serves exactly that metric, from Triton's rfad_pipeline counters.
    [rule] = yaml.safe_load((out / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]
    assert rule["name"]["as"] == QUEUE_METRIC and f'model="{PIPELINE_MODEL}"' in rule["metricsQuery"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and "nv_inference_request_success" in rule["metricsQuery"]
    [policy] = kinds["NetworkPolicy"]
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"rfad-client": "true"}
    assert kinds["PodDisruptionBudget"] and len(kinds["Service"]) >= 2
    [isvc] = kinds["InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    assert (model["modelFormat"]["name"], model["runtime"], model["storageUri"]) == ("triton", "kserve-tritonserver",
                                                                                    "s3://models/rfad/repo")
    jobs = kinds.get("Job", [])
    if profile == "edge":
        assert not jobs  # an edge fleet serves; RF1M work is the datacenter's
    else:
        prepare = next(j for j in jobs if j["metadata"]["name"].endswith("prepare"))
        assert prepare["spec"]["completionMode"] == "Indexed"
        assert prepare["spec"]["completions"] == declared.kubernetes.prepare_shards
        command = prepare["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:2] == ["rfad-data", "prepare"] and f"$(SHARD_INDEX)/{declared.kubernetes.prepare_shards}" in command
        train = next(j for j in jobs if j["metadata"]["name"].endswith("train-rfnet"))
        script = train["spec"]["template"]["spec"]["containers"][0]["command"][2]
        assert f"--nnodes={declared.kubernetes.train_nodes}" in script and "rfad.trainer.cli rfnet" in script
        assert train["spec"]["completions"] == declared.kubernetes.train_nodes


def test_a_wrong_field_or_type_is_caught(tmp_path):
    """The validators are not rubber stamps: a misspelt field and a wrong type are refused."""
    kinds = by_kind(documents(write(tmp_path)))
    deployment = kinds["Deployment"][0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        validate(deployment)
    isvc = kinds["InferenceService"][0]
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(AssertionError, match="storageURI"):
        validate(isvc)
    isvc["spec"]["predictor"]["model"]["storageUri"] = isvc["spec"]["predictor"]["model"].pop("storageURI")
    isvc["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(AssertionError, match="minReplicas"):
        validate(isvc)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_every_folder_builds_with_kustomize(tmp_path):
    out = write(tmp_path, "datacenter", "s3://models/rfad/repo", "--namespace", "ads")
    folders = sorted(p.parent for p in out.rglob("kustomization.yaml"))
    assert len(folders) == 5  # serving, kserve, prepare, train-rfnet, train-rfft
    for folder in folders:
        built = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout
        items = [item for item in yaml.safe_load_all(built) if item]
        assert items and all(item["metadata"]["namespace"] == "ads" for item in items)
        for item in items:
            validate(item)


def test_a_pvc_repository_is_mounted_read_only_without_an_init_container(tmp_path):
    kinds = by_kind(documents(write(tmp_path, "edge", "pvc://triton-models/rfad")))
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    validate(kinds["Deployment"][0])
    assert "initContainers" not in pod
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "triton-models", "readOnly": True}} in pod["volumes"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "rfad"} in pod["containers"][0]["volumeMounts"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}


@pytest.mark.parametrize("args, code, message", [
    (["--profile", "cpu"], 1, "--profile cpu: not a Kubernetes profile"),
    (["--profile", "gpu"], 1, "--profile: 'gpu' is not one of cpu, edge, datacenter"),
    (["--repo-uri", "ftp://host/repo"], 1, "--repo-uri: 'ftp://host/repo' must start with one of"),
    (["--repo-uri", "pvc://"], 1, "names no PersistentVolumeClaim"),
    (["--client-label", "rfad-client"], 2, "expected KEY=VALUE"),
])
def test_bad_flags_are_one_line_errors(tmp_path, args, code, message):
    base = {"--repo-uri": "s3://b/r", "--image": IMAGE, "--profile": "edge", "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    result = CliRunner().invoke(export_cli, ["k8s", *[x for pair in base.items() for x in pair]])
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
