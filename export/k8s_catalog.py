"""A catalog run on the fleet: an Indexed Job of ``rfad-client batch --shard i/N`` against the
serving pods, and the Job that merges the shards' outputs.

Shard *i* reads ``/data/catalog/jobs.jsonl`` (the same file for every shard: each takes the jobs
whose id hashes to *i*, :mod:`rfad.client.catalog`), sends them to every serving pod through the
headless Service (``dns:///<name>-pods:8001``, resolved again as the fleet scales) and writes
``/data/catalog/results/shard-<i>``. A pod that dies (eviction, a lost node) is replaced by the
Job controller and the shard resumes from its own results; a shard with failed jobs exits 1,
and its retry runs just those again. N shards of ``pipeline.instances`` requests each keep the
fleet at its largest size busy. The merge Job (applied once the catalog Job completed) writes
``/data/catalog/merged`` with every product once and fails when one is missing or failed.
Against a secured fleet (``rfad-export k8s --tls-secret``, ``--restrict-secret``) the shards carry
the client's TLS settings and header (:func:`rfad.export.k8s_tls.secure_client`).
"""

from __future__ import annotations

from rfad.deploy.profiles import DeploymentProfile
from rfad.export.k8s_jobs import DATA, INDEX, job_volumes
from rfad.export.k8s_serving import PORTS, Fleet, labels, pod_security, restricted_container
from rfad.export.k8s_tls import secure_client

CATALOG = f"{DATA}/catalog"
CATALOG_LAYOUT = {"jobs": f"{CATALOG}/jobs.jsonl", "results": f"{CATALOG}/results", "merged": f"{CATALOG}/merged"}


def catalog_shards(profile: DeploymentProfile, fleet: Fleet) -> int:
    return fleet.catalog_shards or profile.kubernetes.max_replicas


def _client_pod(fleet: Fleet, container: dict, data_claim: str, component: str) -> tuple[dict, dict]:
    key, value = fleet.client_label  # the NetworkPolicy admits clients by this label
    pod_labels = {**labels(fleet, component), key: value}
    pod = {"restartPolicy": "Never", "securityContext": pod_security(), "automountServiceAccountToken": False,
           "containers": [container], "volumes": job_volumes(data_claim, "64Mi")}
    return pod_labels, pod


def _container(fleet: Fleet, name: str, command: list[str], env: list[dict]) -> dict:
    return {"name": name, "image": fleet.image, "command": command,
            "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}, *env],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "volumeMounts": [{"name": "data", "mountPath": DATA}, {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": restricted_container()}


def catalog_job(profile: DeploymentProfile, fleet: Fleet, data_claim: str) -> dict:
    shards = catalog_shards(profile, fleet)
    name = f"{fleet.name}-catalog"
    command = ["rfad-client", "batch", "--url", f"dns:///{fleet.name}-pods:{PORTS['grpc']}",
               "--input", CATALOG_LAYOUT["jobs"], "--out", f"{CATALOG_LAYOUT['results']}/shard-$(SHARD_INDEX)",
               "--shard", f"$(SHARD_INDEX)/{shards}", "--concurrency", str(profile.pipeline.instances),
               "--no-progress"]
    container = _container(fleet, "batch", command, [{"name": "SHARD_INDEX", "valueFrom": INDEX}])
    pod_labels, pod = _client_pod(fleet, container, data_claim, "catalog")
    if fleet.security is not None:  # the name the certificate carries for the headless Service
        secure_client(container, pod["volumes"], fleet.security, f"{fleet.name}-pods")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": pod_labels},
            "spec": {"completionMode": "Indexed", "completions": shards, "parallelism": shards,
                     "backoffLimitPerIndex": 3, "maxFailedIndexes": shards,
                     "template": {"metadata": {"labels": pod_labels}, "spec": pod}}}


def merge_job(profile: DeploymentProfile, fleet: Fleet, data_claim: str) -> dict:
    shards = catalog_shards(profile, fleet)
    command = ["rfad-client", "merge", "--input", CATALOG_LAYOUT["jobs"], "--out", CATALOG_LAYOUT["merged"],
               *(f"{CATALOG_LAYOUT['results']}/shard-{i}" for i in range(shards))]
    container = _container(fleet, "merge", command, [])
    pod_labels, pod = _client_pod(fleet, container, data_claim, "catalog-merge")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{fleet.name}-catalog-merge",
                                                                  "labels": pod_labels},
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": pod_labels}, "spec": pod}}}
