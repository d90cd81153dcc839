"""One engine-build Job per GPU model: TensorRT engines are built on the GPU model they will run on,
with the TensorRT of the serving release, and written with the model repository that serves them.

Each Job runs on a node of its ``nvidia.com/gpu.product``, in the ``engines`` image
(``deploy/Dockerfile --target engines``: NVIDIA's TensorRT image of the serving release, which
``rfad-export trt`` checks), reads the export at ``/data/exports/<hash>/onnx`` on the data claim
and writes ``/data/exports/<hash>/<gpu>``: the repository the Deployment of that GPU model
serves (directly with ``--repo-uri pvc://<claim>/exports``; else copied to the repository URI).
"""

from __future__ import annotations

import shlex

from rfad.deploy.profiles import DeploymentProfile
from rfad.export.k8s_jobs import DATA, job_volumes
from rfad.export.k8s_serving import Fleet, gpu_slug, labels, pod_security, restricted_container, scheduling

EXPORTS = f"{DATA}/exports"  # <hash>/onnx (uploaded), <hash>/<gpu> (built here)


def export_paths(fleet: Fleet, product: str) -> dict[str, str]:
    """The export's folders on the data claim for GPU model ``product``."""
    root = f"{EXPORTS}/{fleet.export_hash}"
    slug = gpu_slug(product)
    return {"onnx": f"{root}/onnx", "engines": f"{root}/engines-{slug}", "cache": f"{root}/timing-{slug}.cache",
            "repo": f"{root}/{slug}"}


def engine_job(profile: DeploymentProfile, fleet: Fleet, product: str, data_claim: str) -> dict:
    """The Job that builds ``product``'s engines and writes its repository (idempotent: a rerun
    rebuilds, the timing cache makes it quicker)."""
    paths = export_paths(fleet, product)
    name = f"{fleet.name}-engines-{gpu_slug(product)}"
    commands = [
        ["rfad-export", "trt", "--onnx", paths["onnx"], "--engines", paths["engines"], "--profile", profile.name,
         "--timing-cache", paths["cache"]],
        ["rfad-export", "triton-repo", "--onnx", paths["onnx"], "--engines", paths["engines"], "--backend", "tensorrt",
         "--profile", profile.name, "--out", paths["repo"]],
    ]
    script = "set -e; " + "; ".join(shlex.join(command) for command in commands)
    k8s = profile.kubernetes
    container = {"name": "engines", "image": fleet.engine_image, "command": ["sh", "-c", script],
                 "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                 "resources": {"requests": {"cpu": k8s.cpu_request, "memory": str(k8s.memory_request)},
                               "limits": {"memory": str(k8s.memory_limit), "nvidia.com/gpu": "1"}},
                 "volumeMounts": [{"name": "data", "mountPath": DATA}, {"name": "dshm", "mountPath": "/dev/shm"},
                                  {"name": "tmp", "mountPath": "/tmp"}],
                 "securityContext": restricted_container()}
    selector = {**labels(fleet, "engines"), "rfad/gpu": gpu_slug(product)}
    pod = {"restartPolicy": "Never", "securityContext": pod_security(), "automountServiceAccountToken": False,
           **scheduling(profile, product), "containers": [container], "volumes": job_volumes(data_claim, "2Gi")}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": selector},
            "spec": {"backoffLimit": 2, "template": {"metadata": {"labels": selector}, "spec": pod}}}
