"""The KServe alternative to the Deployments: per GPU model one ``InferenceService`` on KServe's
``kserve-tritonserver`` runtime (``modelFormat: triton``), the repository from ``storageUri``
(KServe's storage initializer copies it to /mnt/models), the image, shared memory, scheduling and
drain from the same profile, and what makes it reachable and scaled:

- **RawDeployment** (annotation ``serving.kserve.io/deploymentMode``): a plain Deployment, so the
  pod may declare nodeSelector, tolerations and securityContext (Knative's default feature flags
  reject them: ``kubernetes.podspec-nodeselector``, ``-tolerations``, ``-securitycontext`` would have
  to be enabled in its ``config-features``) and several ports: gRPC as ``h2c`` (9000, the runtime's
  ``--grpc-port``), HTTP (8080) and metrics (8002);
- a headless Service over every predictor pod's gRPC port, which ``rfad-client`` addresses as
  ``dns:///<name>-kserve-grpc:9000`` (balancing per request, as with the Deployments);
- ``serving.kserve.io/autoscalerClass: external``: KServe makes no HPA of its own (in raw mode it
  would scale on CPU); an HPA on the queue metric scales KServe's Deployment ``<isvc>-predictor``,
  and a PodMonitor makes Prometheus scrape the predictor pods.

KServe's runtime already passes ``--model-store`` and its ports; the args add what rfad needs,
TLS and the restricted header included (``rfad-export k8s --tls-secret``, ``--restrict-secret``:
:mod:`rfad.export.k8s_tls`, as on the Deployments).
"""

from __future__ import annotations

from rfad.deploy.drain_times import drain_times
from rfad.deploy.profiles import DeploymentProfile
from rfad.export.k8s_monitoring import pod_monitor
from rfad.export.k8s_serving import (
    PORTS,
    Fleet,
    autoscaler,
    drain_hook,
    gpu_slug,
    labels,
    pod_security,
    resources,
    restricted_container,
    scheduling,
    server_args,
    serving_env,
    shm_volume,
)
from rfad.export.k8s_tls import secure_server

RUNTIME = "kserve-tritonserver"
KSERVE_MODELS = "/mnt/models"
KSERVE_PORTS = {"http1": 8080, "h2c": 9000, "metrics": PORTS["metrics"]}  # the runtime's HTTP and gRPC ports
COMPONENT = "kserve"


def isvc_name(fleet: Fleet, product: str) -> str:
    return f"{fleet.name}-{gpu_slug(product)}"


def grpc_service_name(fleet: Fleet) -> str:
    return f"{fleet.name}-kserve-grpc"


def inference_service(profile: DeploymentProfile, fleet: Fleet, product: str) -> dict:
    k8s = profile.kubernetes
    # The runtime sets the repository and the ports; keep the rest of rfad's flags.
    args = [arg for arg in server_args(profile, KSERVE_MODELS)
            if not arg.startswith(("--model-repository", "--http-port", "--grpc-port"))]
    model = {
        "modelFormat": {"name": "triton"}, "runtime": RUNTIME, "storageUri": fleet.repository_uri(product),
        "protocolVersion": "v2", "image": fleet.image, "args": args, "resources": resources(profile),
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in KSERVE_PORTS.items()],
        "env": serving_env(), "lifecycle": drain_hook(profile),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted_container(),
    }
    volumes = [shm_volume(profile), {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    if fleet.security is not None:
        secure_server(model, volumes, fleet.security)
    pod_labels = {**labels(fleet, COMPONENT), "rfad/gpu": gpu_slug(product)}
    predictor = {
        "minReplicas": k8s.min_replicas, "maxReplicas": k8s.max_replicas, "labels": pod_labels,
        "annotations": {"rfad/export-hash": fleet.export_hash},
        "terminationGracePeriodSeconds": drain_times(profile).grace_s,
        "securityContext": pod_security(), **scheduling(profile, product),
        "volumes": volumes,
        "model": model,
    }
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": isvc_name(fleet, product), "labels": labels(fleet, COMPONENT),
                         "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment",
                                         "serving.kserve.io/autoscalerClass": "external"}},
            "spec": {"predictor": predictor}}


def grpc_service(fleet: Fleet) -> dict:
    """Headless: one DNS address per ready predictor pod, for clients that balance per request."""
    selector = labels(fleet, COMPONENT)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": grpc_service_name(fleet), "labels": selector},
            "spec": {"clusterIP": "None", "selector": selector,
                     "ports": [{"name": "grpc", "port": KSERVE_PORTS["h2c"], "targetPort": "h2c", "protocol": "TCP"}]}}


def kserve_objects(profile: DeploymentProfile, fleet: Fleet) -> list[dict]:
    """Per GPU model its InferenceService and the HPA of KServe's predictor Deployment; the gRPC
    Service and the PodMonitor over all of them."""
    objects = []
    for product in fleet.gpu_products:
        objects.append(inference_service(profile, fleet, product))
        objects.append(autoscaler(profile, fleet, f"{isvc_name(fleet, product)}-predictor", COMPONENT))
    objects.append(grpc_service(fleet))
    objects.append(pod_monitor(fleet, f"{fleet.name}-kserve", labels(fleet, COMPONENT), COMPONENT))
    return objects
