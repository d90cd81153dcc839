"""The KServe alternative to the Deployment: one ``InferenceService`` on KServe's
``kserve-tritonserver`` runtime (``modelFormat: triton``), the repository from ``storageUri``
(KServe's storage initializer copies it to /mnt/models), the image, shared memory and
scheduling from the same profile. KServe's runtime already passes ``--model-store`` and its
ports; the args here add what rfad needs on top.
"""

from __future__ import annotations

from rfad.deploy.profiles import DeploymentProfile
from rfad.export.k8s_serving import (
    Fleet,
    labels,
    pod_security,
    resources,
    restricted_container,
    scheduling,
    server_args,
    shm_volume,
)

RUNTIME = "kserve-tritonserver"
KSERVE_MODELS = "/mnt/models"


def inference_service(profile: DeploymentProfile, fleet: Fleet) -> dict:
    k8s = profile.kubernetes
    # The runtime sets the repository and the ports; keep the rest of rfad's flags.
    args = [arg for arg in server_args(profile, KSERVE_MODELS)
            if not arg.startswith(("--model-repository", "--http-port", "--grpc-port"))]
    model = {
        "modelFormat": {"name": "triton"}, "runtime": RUNTIME, "storageUri": fleet.repo_uri,
        "protocolVersion": "v2", "image": fleet.image, "args": args, "resources": resources(profile),
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted_container(),
    }
    predictor = {
        "minReplicas": k8s.min_replicas, "maxReplicas": k8s.max_replicas,
        # Knative's autoscaler counts requests in flight: one pod runs this many loops at once.
        "scaleMetric": "concurrency", "scaleTarget": profile.pipeline.instances,
        "securityContext": pod_security(), **scheduling(profile),
        "volumes": [shm_volume(profile), {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        "model": model,
    }
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": fleet.name, "labels": labels(fleet, "serving")}, "spec": {"predictor": predictor}}
