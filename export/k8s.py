"""``rfad-export k8s``: Kustomize-ready Kubernetes manifests for a GPU profile.

    OUT/kustomization.yaml        the serving fleet: kubectl apply -k OUT
    OUT/deployment.yaml           one tritonserver Deployment per GPU model (probes, GPU, /dev/shm, drain)
    OUT/services.yaml             ClusterIP + headless (per-request gRPC balancing, dns:/// clients)
    OUT/hpa.yaml, OUT/pdb.yaml    per Deployment: autoscaling/v2 on queue time; one pod down at a time
    OUT/monitoring.yaml           ServiceMonitor (or PodMonitor): Prometheus scrapes Triton
    OUT/networkpolicy.yaml        inference ports from labelled clients only (gRPC only under TLS)
    OUT/certificate.yaml          cert-manager Certificate of the TLS Secret   (--cert-manager-issuer)
    OUT/prometheus-adapter-values.yaml   Helm values: the Prometheus URL and the HPA metric's rule
    OUT/kserve/                   the KServe alternative (RawDeployment), same GPU models
    OUT/jobs/engines/             one engine-build Job per GPU model (when an engine image exists)
    OUT/jobs/catalog/, OUT/jobs/catalog-merge/   a catalog run: Indexed Job of rfad-client batch shards
    OUT/jobs/prepare/, OUT/jobs/train-*/         RF1M preparation and training (datacenter)
    OUT/README.md                 what is where and the order to apply it

Everything is sized by the profile (:mod:`rfad.deploy.profiles`); the repositories lie under
REPO_URI/<export hash>/<gpu> (:func:`rfad.components.manifest.export_hash` of ``--onnx``). rfad
writes and validates the manifests and runs no scheduler of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from rfad.components.manifest import export_hash
from rfad.deploy.drain_times import drain_times
from rfad.deploy.profiles import DeploymentProfile, get_profile
from rfad.export.k8s_catalog import CATALOG_LAYOUT, catalog_job, catalog_shards, merge_job
from rfad.export.k8s_engines import EXPORTS, engine_job
from rfad.export.k8s_jobs import DATA_LAYOUT, prepare_job, train_job
from rfad.export.k8s_kserve import grpc_service_name, kserve_objects
from rfad.export.k8s_monitoring import adapter_rule, monitoring
from rfad.export.k8s_tls import certificate, readme_lines
from rfad.export.k8s_serving import (
    PORTS,
    QUEUE_METRIC,
    Fleet,
    autoscaler,
    deployment,
    disruption_budget,
    labels,
    network_policy,
    services,
)

KUBERNETES_VERSION = "1.31.0"  # the schemas the tests validate against (kubernetes-validate)
TRAIN_STAGES = ("rfnet", "rfft")


class _Dumper(yaml.SafeDumper):
    """Plain YAML: a dict used twice (labels as selector) is written twice, not as an anchor."""

    def ignore_aliases(self, data) -> bool:
        return True


def _dump(path: Path, documents: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=120))


def _kustomization(folder: Path, resources: list[str], namespace: str | None) -> None:
    document = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        document["namespace"] = namespace
    document["resources"] = resources
    _dump(folder / "kustomization.yaml", [document])


def manifests(profile: DeploymentProfile, fleet: Fleet, data_claim: str = "rfad-data",
              namespace: str | None = None) -> dict[str, list[dict]]:
    """Relative file path -> the Kubernetes objects it holds (kustomizations and README aside)."""
    products = fleet.gpu_products
    files = {
        "deployment.yaml": [deployment(profile, fleet, product) for product in products],
        "services.yaml": services(fleet),
        "hpa.yaml": [autoscaler(profile, fleet, fleet.deployment_name(product)) for product in products],
        "pdb.yaml": [disruption_budget(fleet, product) for product in products],
        "monitoring.yaml": monitoring(fleet),
        "networkpolicy.yaml": [network_policy(fleet)],
        "kserve/inferenceservice.yaml": kserve_objects(profile, fleet),
    }
    if fleet.security is not None and fleet.security.cert_manager_issuer:
        files["certificate.yaml"] = [certificate(fleet.security, fleet.name, namespace, labels(fleet, "serving"))]
    if fleet.engine_image:
        files["jobs/engines/job.yaml"] = [engine_job(profile, fleet, product, data_claim) for product in products]
    if fleet.security is None or fleet.security.clients_can_connect():  # else the README says what is missing
        files["jobs/catalog/job.yaml"] = [catalog_job(profile, fleet, data_claim)]
        files["jobs/catalog-merge/job.yaml"] = [merge_job(profile, fleet, data_claim)]
    if profile.kubernetes.prepare_shards:
        files["jobs/prepare/job.yaml"] = [prepare_job(profile, fleet, data_claim)]
        for stage in TRAIN_STAGES:
            files[f"jobs/train-{stage}/job.yaml"] = train_job(profile, fleet, data_claim, stage)
    return files


def write_k8s(out: str | Path, profile_name: str, image: str, repo_uri: str, onnx_dir: str | Path, name: str = "rfad",
              namespace: str | None = "rfad", data_claim: str = "rfad-data", gpu_products: tuple[str, ...] = (),
              engine_image: str | None = None, **fleet_options) -> dict[str, list[dict]]:
    """Write the manifests of ``profile_name`` to ``out`` (replaced if it exists); returns them by
    file. ``onnx_dir``: the export whose repositories the fleet serves (its hash names them);
    ``gpu_products``: the GPU models (default: the profile's); ``engine_image`` default: ``image``
    with ``-engines`` appended to its tag, where the profile's release has a TensorRT image."""
    profile = get_profile(profile_name)
    if profile.kubernetes is None:
        raise ValueError(f"--profile {profile.name}: not a Kubernetes profile (one of "
                         "edge, datacenter; cpu is what rfad-serve runs)")
    if not image or any(c.isspace() for c in image):
        raise ValueError(f"--image: {image!r} is not an image reference")
    if engine_image is None and profile.image is not None and profile.image.engine_image:
        if "@" in image:
            raise ValueError(f"--image {image} is a digest: name the engine-build image with --engine-image")
        engine_image = f"{image}-engines" if ":" in image.rsplit("/", 1)[-1] else f"{image}:engines"
    fleet = Fleet(name=name, image=image, repo_uri=repo_uri, export_hash=export_hash(onnx_dir),
                  gpu_products=tuple(gpu_products) or profile.kubernetes.gpu_products, engine_image=engine_image,
                  **fleet_options)
    adapter_values = adapter_rule(fleet.prometheus_url)
    files = manifests(profile, fleet, data_claim, namespace)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    for relative, documents in files.items():
        _dump(out / relative, documents)
    by_folder: dict[Path, list[str]] = {}
    for relative in files:
        path = Path(relative)
        by_folder.setdefault(path.parent, []).append(path.name)
    for folder, resources in by_folder.items():
        _kustomization(out / folder, resources, namespace)
    _dump(out / "prometheus-adapter-values.yaml", [adapter_values])
    _write_readme(out, profile, fleet, namespace, data_claim, files)
    return files


def _write_readme(out: Path, profile: DeploymentProfile, fleet: Fleet, namespace: str | None, data_claim: str,
                  files: dict) -> None:
    ns = f" -n {namespace}" if namespace else ""
    key, value = fleet.client_label
    times = drain_times(profile)
    monitor = "ServiceMonitor" if fleet.monitor == "servicemonitor" else "PodMonitor"
    products = ", ".join(f"`{p}`" for p in fleet.gpu_products)
    lines = [
        f"# rfad on Kubernetes: profile `{profile.name}`", "",
        f"{profile.summary}. Image `{fleet.image}`; export `{fleet.export_hash}`; GPU models {products}, one "
        "Deployment each (a TensorRT engine runs only on the GPU model it was built on).", "",
        "Each Deployment serves the repository `rfad-export triton-repo --profile "
        f"{profile.name}` wrote for its GPU model, at:", "",
        *[f"- `{fleet.repository_uri(p)}` ({p})" for p in fleet.gpu_products], "",
        "A new export has a new hash, hence new repository paths and a rollout: files never change under running pods.",
        "",
        f"1. Repositories. Put the ONNX export on the claim `{data_claim}` at `{EXPORTS}/{fleet.export_hash}/onnx`"
        + (", then `kubectl apply -k jobs/engines`: one Job per GPU model builds its engines there (on a node of that "
           f"model, image `{fleet.engine_image}`) and writes `{EXPORTS}/{fleet.export_hash}/<gpu>`. With "
           f"`--repo-uri pvc://{data_claim}/exports` the fleet reads them in place; else copy each to its URI above."
           if "jobs/engines/job.yaml" in files else
           "; build each GPU model's engines on a device of that model (`rfad-export trt`, then "
           "`rfad-export triton-repo --backend tensorrt`) and put the repository at its URI above."),
        f"2. Metrics: Prometheus (kube-prometheus-stack) must select the {monitor} in `monitoring.yaml` (labels "
        f"{', '.join(f'`{k}={v}`' for k, v in fleet.monitor_labels) or 'none'}). Then install prometheus-adapter "
        "with the values beside this file (`helm install prometheus-adapter prometheus-community/prometheus-adapter "
        f"-f prometheus-adapter-values.yaml`: Prometheus at `{fleet.prometheus_url}`); the HPAs read `{QUEUE_METRIC}`.",
        f"3. Serving: `kubectl apply -k .`. Clients must carry the label `{key}={value}`; they balance per request "
        f"over the headless Service: `rfad-client health --url dns:///{fleet.name}-pods:{PORTS['grpc']}` from a "
        f"labelled pod (`kubectl{ns} rollout status deployment/{fleet.deployment_name(fleet.gpu_products[0])}`).",
        f"   Or on KServe (RawDeployment): `kubectl apply -k kserve` instead, addressed as "
        f"`dns:///{grpc_service_name(fleet)}:9000`.",
        f"4. Stopping a pod drains it: preStop keeps serving {times.endpoint_drop_s} s, then refuses new requests and "
        f"waits up to {times.worst_loop_s} s for the loops in flight (grace period {times.grace_s} s).",
        f"5. A catalog run: the jobs at `{CATALOG_LAYOUT['jobs']}` on the claim, `kubectl apply -k jobs/catalog` "
        f"({catalog_shards(profile, fleet)} shards; a killed shard resumes), then, once it completed, "
        f"`kubectl apply -k jobs/catalog-merge` (every product once, in `{CATALOG_LAYOUT['merged']}`)."
        if "jobs/catalog/job.yaml" in files else
        "5. No catalog Job was written: under TLS its shards are clients of the fleet and need "
        "`rfad-export k8s --client-tls-secret` (a Secret with `ca.crt`, the CA that signed the servers' "
        "certificate" + (", and `tls.crt`/`tls.key` of a client certificate" if fleet.security.mutual else "")
        + ").",
    ]
    if fleet.security is not None:
        lines += readme_lines(fleet.security, [fleet.deployment_name(p) for p in fleet.gpu_products],
                              fleet.name, namespace)
    if any(name.startswith("jobs/prepare") for name in files):
        lines += [
            "", "## RF1M data preparation and training", "",
            f"The Jobs share the ReadWriteMany PersistentVolumeClaim `{data_claim}` mounted at /data, laid out as:", "",
            *[f"- `{path}`: {role}" for role, path in DATA_LAYOUT.items()], "",
            "`kubectl apply -k jobs/prepare`, then once it completes merge the shards' manifests by running "
            "`rfad-data prepare` without `--shard` on the same paths (every map is kept, none recomputed), "
            "then `kubectl apply -k jobs/train-rfnet` and, with the trained RFNet, `jobs/train-rfft`.",
        ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
