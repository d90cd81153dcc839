"""``rfad-export k8s``: Kustomize-ready Kubernetes manifests for a GPU profile.

    OUT/kustomization.yaml        the serving fleet: kubectl apply -k OUT
    OUT/deployment.yaml           tritonserver (model control mode none, probes, GPU, /dev/shm)
    OUT/services.yaml             ClusterIP + headless (per-request gRPC balancing)
    OUT/hpa.yaml                  autoscaling/v2 on queue time per rfad_pipeline request
    OUT/pdb.yaml, OUT/networkpolicy.yaml
    OUT/prometheus-adapter-values.yaml   the rule the HPA's metric needs (not a resource)
    OUT/kserve/                   the KServe alternative: one InferenceService
    OUT/jobs/prepare/             Indexed Job: rfad-data prepare --shard i/N   (datacenter)
    OUT/jobs/train-rfnet/, OUT/jobs/train-rfft/   multi-node torchrun Jobs   (datacenter)
    OUT/README.md                 what is where and the order to apply it

Everything is sized by the profile (:mod:`rfad.deploy.profiles`); rfad writes and validates the
manifests and runs no scheduler of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from rfad.contract import TRITON_PORTS
from rfad.deploy.profiles import DeploymentProfile, get_profile
from rfad.export.k8s_jobs import DATA_LAYOUT, prepare_job, train_job
from rfad.export.k8s_kserve import inference_service
from rfad.export.k8s_serving import (
    QUEUE_METRIC,
    Fleet,
    adapter_rule,
    autoscaler,
    deployment,
    disruption_budget,
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


def manifests(profile: DeploymentProfile, fleet: Fleet, data_claim: str = "rfad-data") -> dict[str, list[dict]]:
    """Relative file path -> the Kubernetes objects it holds (kustomizations and README aside)."""
    files = {
        "deployment.yaml": [deployment(profile, fleet)],
        "services.yaml": services(fleet),
        "hpa.yaml": [autoscaler(profile, fleet)],
        "pdb.yaml": [disruption_budget(fleet)],
        "networkpolicy.yaml": [network_policy(fleet)],
        "kserve/inferenceservice.yaml": [inference_service(profile, fleet)],
    }
    if profile.kubernetes.prepare_shards:
        files["jobs/prepare/job.yaml"] = [prepare_job(profile, fleet, data_claim)]
        for stage in TRAIN_STAGES:
            files[f"jobs/train-{stage}/job.yaml"] = train_job(profile, fleet, data_claim, stage)
    return files


def write_k8s(out: str | Path, profile_name: str, image: str, repo_uri: str, name: str = "rfad",
              namespace: str | None = "rfad", data_claim: str = "rfad-data", **fleet_options) -> dict[str, list[dict]]:
    """Write the manifests of ``profile_name`` to ``out`` (replaced if it exists); returns them by file."""
    profile = get_profile(profile_name)
    if profile.kubernetes is None:
        raise ValueError(f"--profile {profile.name}: not a Kubernetes profile (one of "
                         "edge, datacenter; cpu is what rfad-serve runs)")
    if not image or any(c.isspace() for c in image):
        raise ValueError(f"--image: {image!r} is not an image reference")
    fleet = Fleet(name=name, image=image, repo_uri=repo_uri, **fleet_options)
    files = manifests(profile, fleet, data_claim)
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
    _dump(out / "prometheus-adapter-values.yaml", [adapter_rule()])
    _write_readme(out, profile, fleet, namespace, data_claim, files)
    return files


def _write_readme(out: Path, profile: DeploymentProfile, fleet: Fleet, namespace: str | None, data_claim: str,
                  files: dict) -> None:
    ns = f" -n {namespace}" if namespace else ""
    key, value = fleet.client_label
    lines = [
        f"# rfad on Kubernetes: profile `{profile.name}`", "",
        f"{profile.summary}. Image `{fleet.image}`, model repository `{fleet.repo_uri}` "
        f"(written by `rfad-export triton-repo --profile {profile.name}`).", "",
        "1. Metrics for the autoscaler: install prometheus-adapter with the rule beside this file "
        "(`helm install prometheus-adapter prometheus-community/prometheus-adapter -f prometheus-adapter-values.yaml`, "
        "its `prometheus.url` pointed at your Prometheus, which scrapes pods annotated `prometheus.io/scrape`). "
        f"The HPA reads `{QUEUE_METRIC}` from it.",
        f"2. Serving: `kubectl apply -k .` (Deployment, Services, HPA, PodDisruptionBudget, NetworkPolicy"
        f"{', namespace ' + namespace if namespace else ''}). Clients must carry the label `{key}={value}`; "
        f"gRPC clients that balance per request use the headless Service `{fleet.name}-pods`.",
        "   Or, on KServe with the `kserve-tritonserver` runtime: `kubectl apply -k kserve` instead.",
        f"3. Check: `kubectl{ns} rollout status deployment/{fleet.name}`, then `rfad-client health --url "
        f"{fleet.name}.{namespace or 'default'}:{TRITON_PORTS['grpc']}` from a labelled pod.",
    ]
    if any(name.startswith("jobs/") for name in files):
        lines += [
            "", "## RF1M data preparation and training", "",
            f"The Jobs share the ReadWriteMany PersistentVolumeClaim `{data_claim}` mounted at /data, laid out as:", "",
            *[f"- `{path}`: {role}" for role, path in DATA_LAYOUT.items()], "",
            "`kubectl apply -k jobs/prepare`, then once it completes merge the shards' manifests by running "
            "`rfad-data prepare` without `--shard` on the same paths (every map is kept, none recomputed), "
            "then `kubectl apply -k jobs/train-rfnet` and, with the trained RFNet, `jobs/train-rfft`.",
        ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
