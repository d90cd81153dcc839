"""`rfad-export k8s`: every manifest validates against the Kubernetes schemas of a named version
(kubernetes-validate, strict: unknown fields are errors), the InferenceService against KServe's
CRD schema, the ServiceMonitor and PodMonitor against the Prometheus Operator's, every folder
builds with kustomize, the numbers come from the profile, and the pieces fit together: the
monitor scrapes the Service that has the metrics port, the HPAs target the Deployments, the
engine Jobs write the repositories the Deployments read, the catalog Job reaches the pods."""

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

from rfad.client.endpoints import parse_endpoints
from rfad.contract import PIPELINE_MODEL
from rfad.deploy.drain_times import drain_times
from rfad.deploy.profiles import PROFILES
from rfad.export.cli import main as export_cli
from rfad.export.k8s import KUBERNETES_VERSION
from rfad.export.k8s_serving import QUEUE_METRIC

DATA = Path(__file__).parent / "data"
SCHEMAS = {"InferenceService": "kserve-v0.20.0-inferenceservice-v1beta1.schema.json.gz",
           "ServiceMonitor": "prometheus-operator-v0.93.0-servicemonitors-v1.schema.json.gz",
           "PodMonitor": "prometheus-operator-v0.93.0-podmonitors-v1.schema.json.gz"}
IMAGE = "registry.example/rfad:0.1.0"
JETSON = "NVIDIA-Jetson-Orin-NX"  # stands for the label an edge cluster's GPU feature discovery gives


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


CRD_VALIDATORS = {kind: jsonschema.Draft4Validator(_strict(json.loads(gzip.decompress((DATA / name).read_bytes()))))
                  for kind, name in SCHEMAS.items()}


def validate(document: dict) -> None:
    """Raise if ``document`` is not a valid object of its kind."""
    if document["kind"] in CRD_VALIDATORS:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in CRD_VALIDATORS[document["kind"]].iter_errors(document)]
        assert not errors, errors
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def export_dir(tmp_path: Path, content: str = '{"format": 3, "export": "a"}') -> Path:
    """An export folder as far as `rfad-export k8s` reads it: its manifest.json, whose hash names the repositories."""
    folder = tmp_path / f"onnx-{abs(hash(content))}"
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(content)
    return folder


def write(tmp_path, profile="datacenter", repo_uri="s3://models/rfad", *extra, onnx=None):
    out = tmp_path / profile
    gpu = ["--gpu-product", JETSON] if profile == "edge" and "--gpu-product" not in extra else []
    result = CliRunner().invoke(export_cli, ["k8s", "--repo-uri", repo_uri, "--image", IMAGE, "--profile", profile,
                                             "--onnx", str(onnx or export_dir(tmp_path)), "--out", str(out),
                                             *gpu, *extra])
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
    products = declared.kubernetes.gpu_products or (JETSON,)
    deployments = kinds["Deployment"]
    assert [d["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] for d in deployments] == list(products)
    for deployment in deployments:
        assert "replicas" not in deployment["spec"]  # the HPA owns them
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
        # The repository of this GPU model, under the export's hash, copied into a volume mounted read-only.
        [init] = pod["initContainers"]
        slug = deployment["metadata"]["labels"]["rfad/gpu"]
        assert init["args"][1] == "/models" and init["args"][0].endswith(f"/{slug}")
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
        # Draining: preStop (endpoint drop + the worst-case loop) and Triton's exit timeout fit in the grace period.
        times = drain_times(declared)
        hook = server["lifecycle"]["preStop"]["exec"]["command"]
        assert hook[:3] == ["python3", "-m", "rfad.serving.draining"] and f"--timeout={times.worst_loop_s}" in hook
        assert f"--exit-timeout-secs={times.exit_timeout_s}" in server["args"]
        assert pod["terminationGracePeriodSeconds"] > times.pre_stop_s + times.exit_timeout_s
        assert {"name": "RFAD_DRAIN_FILE", "value": "/tmp/rfad-draining"} in server["env"]
    # The Deployments' selectors are disjoint; the Services and the NetworkPolicy cover them all.
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments]
    assert len({json.dumps(s, sort_keys=True) for s in selectors}) == len(products)
    serving = [s for s in kinds["Service"] if s["metadata"]["labels"]["app.kubernetes.io/component"] == "serving"]
    assert len(serving) == 2 and all(service["spec"]["selector"].items() <= s.items()
                                     for service in serving for s in selectors)
    hpas = [h for h in kinds["HorizontalPodAutoscaler"] if h["metadata"]["labels"]["app.kubernetes.io/component"] == "serving"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == [d["metadata"]["name"] for d in deployments]
    for hpa in hpas:
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (declared.kubernetes.min_replicas,
                                                                             declared.kubernetes.max_replicas)
        [metric] = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == QUEUE_METRIC
    # The adapter's values: the Prometheus it asks, and the rule that serves exactly that metric.
    values = yaml.safe_load((out / "prometheus-adapter-values.yaml").read_text())
    assert values["prometheus"] == {"url": "http://prometheus-operated.monitoring.svc", "port": 9090}
    [rule] = values["rules"]["custom"]
    assert rule["name"]["as"] == QUEUE_METRIC and f'model="{PIPELINE_MODEL}"' in rule["metricsQuery"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and "nv_inference_request_success" in rule["metricsQuery"]
    [policy] = kinds["NetworkPolicy"]
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"rfad-client": "true"}
    assert len(kinds["PodDisruptionBudget"]) == len(products)
    assert [i["spec"]["predictor"]["nodeSelector"]["nvidia.com/gpu.product"] for i in kinds["InferenceService"]] == list(products)
    jobs = {j["metadata"]["name"]: j for j in kinds.get("Job", [])}
    assert {"rfad-catalog", "rfad-catalog-merge"} <= set(jobs)
    if profile == "edge":
        assert set(jobs) == {"rfad-catalog", "rfad-catalog-merge"}  # no RF1M work, no TensorRT image for Jetson
    else:
        prepare = jobs["rfad-prepare"]
        assert prepare["spec"]["completionMode"] == "Indexed"
        assert prepare["spec"]["completions"] == declared.kubernetes.prepare_shards
        command = prepare["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:2] == ["rfad-data", "prepare"] and f"$(SHARD_INDEX)/{declared.kubernetes.prepare_shards}" in command
        train = jobs["rfad-train-rfnet"]
        script = train["spec"]["template"]["spec"]["containers"][0]["command"][2]
        assert f"--nnodes={declared.kubernetes.train_nodes}" in script and "rfad.trainer.cli rfnet" in script
        assert train["spec"]["completions"] == declared.kubernetes.train_nodes
        assert {f"rfad-engines-{d['metadata']['labels']['rfad/gpu']}" for d in deployments} <= set(jobs)


def test_a_new_export_is_a_new_repository_prefix_and_a_rollout(tmp_path):
    first = by_kind(documents(write(tmp_path, onnx=export_dir(tmp_path, '{"export": 1}'))))["Deployment"][0]
    second = by_kind(documents(write(tmp_path, onnx=export_dir(tmp_path, '{"export": 2}'))))["Deployment"][0]
    uri = [d["spec"]["template"]["spec"]["initContainers"][0]["args"][0] for d in (first, second)]
    assert uri[0] != uri[1] and all(u.startswith("s3://models/rfad/") and u.endswith("/nvidia-a100-sxm4-80gb")
                                    for u in uri)
    # The pod template changes with it, so applying the manifests rolls the Deployment out.
    assert first["spec"]["template"] != second["spec"]["template"]
    assert first["spec"]["template"]["metadata"]["annotations"]["rfad/export-hash"] in uri[0]


@pytest.mark.parametrize("monitor", ["servicemonitor", "podmonitor"])
def test_prometheus_scrapes_each_serving_pod_once_through_the_operator(tmp_path, monitor):
    kinds = by_kind(documents(write(tmp_path, "datacenter", "s3://m/r", "--monitor", monitor,
                                    "--monitor-label", "release=prom")))
    serving = [s for s in kinds["Service"] if s["metadata"]["labels"]["app.kubernetes.io/component"] == "serving"]
    pod_labels = kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
    if monitor == "servicemonitor":
        [scrape] = [m for m in kinds["ServiceMonitor"]]
        chosen = [s for s in serving if scrape["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(chosen) == 1 and chosen[0]["spec"].get("clusterIP") != "None"  # not the headless twin as well
        assert scrape["spec"]["endpoints"][0]["port"] in {p["name"] for p in chosen[0]["spec"]["ports"]}
    else:
        scrape = next(m for m in kinds["PodMonitor"] if m["metadata"]["name"] == "rfad")
        assert scrape["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert "ServiceMonitor" not in kinds
    assert scrape["metadata"]["labels"]["release"] == "prom"  # what kube-prometheus-stack selects monitors by
    container = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert "metrics" in {p["name"] for p in container["ports"]}


def test_kserve_is_raw_deployment_with_a_grpc_port_rfad_client_can_address(tmp_path):
    out = write(tmp_path)
    kinds = by_kind(documents(out / "kserve"))
    isvc = kinds["InferenceService"][0]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert (model["modelFormat"]["name"], model["runtime"]) == ("triton", "kserve-tritonserver")
    assert {"name": "h2c", "containerPort": 9000, "protocol": "TCP"} in model["ports"]
    assert model["lifecycle"]["preStop"]["exec"]["command"][2] == "rfad.serving.draining"
    [grpc] = kinds["Service"]
    assert grpc["spec"]["clusterIP"] == "None" and grpc["spec"]["ports"][0]["targetPort"] == "h2c"
    assert grpc["spec"]["selector"].items() <= predictor["labels"].items()
    url = f"dns:///{grpc['metadata']['name']}:{grpc['spec']['ports'][0]['port']}"
    assert parse_endpoints(url) == (url,) and f"`{url}`" in (out / "README.md").read_text()
    hpas = kinds["HorizontalPodAutoscaler"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == [f"{i['metadata']['name']}-predictor"
                                                                    for i in kinds["InferenceService"]]
    [scrape] = kinds["PodMonitor"]
    assert scrape["spec"]["selector"]["matchLabels"].items() <= predictor["labels"].items()


def test_engine_jobs_write_the_repositories_the_deployments_read(tmp_path):
    kinds = by_kind(documents(write(tmp_path, "datacenter", "pvc://rfad-data/exports")))
    jobs = {j["metadata"]["labels"]["rfad/gpu"]: j for j in kinds["Job"] if j["metadata"]["name"].startswith("rfad-engines")}
    for deployment in kinds["Deployment"]:
        slug = deployment["metadata"]["labels"]["rfad/gpu"]
        pod = deployment["spec"]["template"]["spec"]
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
        job = jobs[slug]["spec"]["template"]["spec"]
        assert job["nodeSelector"]["nvidia.com/gpu.product"] == pod["nodeSelector"]["nvidia.com/gpu.product"]
        script = job["containers"][0]["command"][2]
        assert job["containers"][0]["image"] == f"{IMAGE}-engines"
        assert "rfad-export trt" in script and "--profile datacenter" in script
        assert f"--backend tensorrt --profile datacenter --out /data/{mount['subPath']}" in script


def test_the_catalog_job_shards_a_batch_over_the_fleet_and_the_merge_reads_every_shard(tmp_path):
    kinds = by_kind(documents(write(tmp_path, "datacenter", "s3://m/r", "--catalog-shards", "4")))
    jobs = {j["metadata"]["name"]: j for j in kinds["Job"]}
    catalog, merge = jobs["rfad-catalog"], jobs["rfad-catalog-merge"]
    assert (catalog["spec"]["completionMode"], catalog["spec"]["completions"]) == ("Indexed", 4)
    pod = catalog["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:2] == ["rfad-client", "batch"] and "$(SHARD_INDEX)/4" in command
    url = command[command.index("--url") + 1]
    headless = next(s for s in kinds["Service"] if s["spec"].get("clusterIP") == "None"
                    and s["metadata"]["labels"]["app.kubernetes.io/component"] == "serving")
    assert url == f"dns:///{headless['metadata']['name']}:8001" and parse_endpoints(url) == (url,)
    # The NetworkPolicy admits the shards: they carry the client label.
    [policy] = kinds["NetworkPolicy"]
    admitted = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert admitted.items() <= catalog["spec"]["template"]["metadata"]["labels"].items()
    shard_out = command[command.index("--out") + 1]
    merged = merge["spec"]["template"]["spec"]["containers"][0]["command"]
    assert merged[:2] == ["rfad-client", "merge"]
    assert [f for f in merged if f.startswith("/data/catalog/results/")] == [
        shard_out.replace("$(SHARD_INDEX)", str(i)) for i in range(4)]


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
    monitor = kinds["ServiceMonitor"][0]
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(AssertionError, match="intervall"):
        validate(monitor)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_every_folder_builds_with_kustomize(tmp_path):
    out = write(tmp_path, "datacenter", "s3://models/rfad/repo", "--namespace", "ads")
    folders = sorted(p.parent for p in out.rglob("kustomization.yaml"))
    assert len(folders) == 8  # serving, kserve, engines, catalog, catalog-merge, prepare, train-rfnet, train-rfft
    for folder in folders:
        built = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout
        items = [item for item in yaml.safe_load_all(built) if item]
        assert items and all(item["metadata"]["namespace"] == "ads" for item in items)
        for item in items:
            validate(item)


def test_a_pvc_repository_is_mounted_read_only_without_an_init_container(tmp_path):
    kinds = by_kind(documents(write(tmp_path, "edge", "pvc://triton-models/rfad")))
    deployment = kinds["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    validate(deployment)
    assert "initContainers" not in pod
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "triton-models", "readOnly": True}} in pod["volumes"]
    export = deployment["spec"]["template"]["metadata"]["annotations"]["rfad/export-hash"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True,
            "subPath": f"rfad/{export}/nvidia-jetson-orin-nx"} in pod["containers"][0]["volumeMounts"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64", "nvidia.com/gpu.product": JETSON}


@pytest.mark.parametrize("args, code, message", [
    (["--profile", "cpu"], 1, "--profile cpu: not a Kubernetes profile"),
    (["--profile", "gpu"], 1, "--profile: 'gpu' is not one of cpu, edge, datacenter"),
    (["--repo-uri", "ftp://host/repo"], 1, "--repo-uri: 'ftp://host/repo' must start with one of"),
    (["--repo-uri", "pvc://"], 1, "names no PersistentVolumeClaim"),
    (["--client-label", "rfad-client"], 2, "expected KEY=VALUE"),
    (["--gpu-product", ""], 1, "--gpu-product: '' cannot name a Deployment"),
    (["--profile", "datacenter", "--prometheus-url", "prometheus:9090"], 1, "is not http(s)://host:port"),
    (["--profile", "datacenter", "--gpu-product", "A100", "--gpu-product", "a100"], 1, "name the same GPU model twice"),
    (["--profile", "datacenter", "--image", "registry.example/rfad@sha256:0123"], 1, "is a digest: name the engine"),
])
def test_bad_flags_are_one_line_errors(tmp_path, args, code, message):
    base = {"--repo-uri": "s3://b/r", "--image": IMAGE, "--profile": "edge", "--out": str(tmp_path / "o"),
            "--onnx": str(export_dir(tmp_path))}
    extra = []
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "--gpu-product":
            extra += [flag, value]
        else:
            base[flag] = value
    result = CliRunner().invoke(export_cli, ["k8s", *[x for pair in base.items() for x in pair], *extra])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_an_edge_fleet_must_name_its_gpu_model(tmp_path):
    result = CliRunner().invoke(export_cli, ["k8s", "--repo-uri", "s3://b/r", "--image", IMAGE, "--profile", "edge",
                                             "--onnx", str(export_dir(tmp_path)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "--gpu-product: name the nvidia.com/gpu.product label" in result.output
