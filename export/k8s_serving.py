"""Kubernetes objects that serve the model repository: tritonserver Deployment, Services,
HorizontalPodAutoscaler (with the prometheus-adapter rule it reads), PodDisruptionBudget and
NetworkPolicy. Plain dicts, one function per object, every number from the profile.

The autoscaler follows NVIDIA's Triton chart (server repository, ``deploy/k8s-onprem``): a
``Pods`` metric of queue time per request, which prometheus-adapter computes from Triton's own
counters ``nv_inference_queue_duration_us`` and ``nv_inference_request_success``; here only for
``rfad_pipeline``, whose queue is where waiting requests pile up (the component models' queues
hold the dynamic batcher's few milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from rfad.contract import PIPELINE_MODEL, TRITON_PORTS
from rfad.deploy.profiles import DeploymentProfile

PORTS = TRITON_PORTS  # Triton's defaults, as rfad-serve and the client use them
QUEUE_METRIC = "rfad_pipeline_queue_us_per_request"
MODELS = "/models"
# KServe's storage initializer: one container that copies s3://, gs://, https:// (and more) to a
# folder; the same one KServe runs before its own predictors.
INITIALIZER_IMAGE = "kserve/storage-initializer:v0.20.0"
URI_SCHEMES = ("s3://", "gs://", "https://", "hdfs://", "webhdfs://", "pvc://")


@dataclass(frozen=True)
class Fleet:
    """What the operator chooses (the profile chooses the rest)."""

    name: str
    image: str
    repo_uri: str
    client_label: tuple[str, str] = ("rfad-client", "true")
    monitoring_namespace: str = "monitoring"
    storage_secret: str | None = None  # a Secret with the credentials the storage initializer reads
    initializer_image: str = INITIALIZER_IMAGE

    def __post_init__(self) -> None:
        if not self.repo_uri.startswith(URI_SCHEMES):
            raise ValueError(f"--repo-uri: {self.repo_uri!r} must start with one of {', '.join(URI_SCHEMES)}")
        if self.repo_uri.startswith("pvc://") and len(self.repo_uri[6:].strip("/")) == 0:
            raise ValueError(f"--repo-uri: {self.repo_uri!r} names no PersistentVolumeClaim (pvc://CLAIM[/path])")


def labels(fleet: Fleet, component: str) -> dict:
    return {"app.kubernetes.io/name": "rfad", "app.kubernetes.io/instance": fleet.name,
            "app.kubernetes.io/component": component}


def restricted_container() -> dict:
    """The container securityContext of the restricted Pod Security Standard."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security() -> dict:
    # 1000: the unprivileged user of NVIDIA's tritonserver images (triton-server).
    return {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}}


def server_args(profile: DeploymentProfile, repository: str = MODELS) -> list[str]:
    """tritonserver's flags: every model loaded at start (control mode none), readiness only when
    all are, exit on a model that fails to load (the pod restarts visibly), the python backend's
    shared memory from the profile."""
    shm = profile.shm
    return [f"--model-repository={repository}", "--model-control-mode=none", "--strict-readiness=true",
            "--exit-on-error=true", f"--http-port={PORTS['http']}", f"--grpc-port={PORTS['grpc']}",
            f"--metrics-port={PORTS['metrics']}", "--allow-metrics=true",
            f"--backend-config=python,shm-default-byte-size={shm.default_byte_size}",
            f"--backend-config=python,shm-growth-byte-size={shm.growth_byte_size}"]


def resources(profile: DeploymentProfile) -> dict:
    k8s = profile.kubernetes
    limits = {"memory": str(k8s.memory_limit)}
    if k8s.gpus_per_pod:
        limits["nvidia.com/gpu"] = str(k8s.gpus_per_pod)
    return {"requests": {"cpu": k8s.cpu_request, "memory": str(k8s.memory_request)}, "limits": limits}


def scheduling(profile: DeploymentProfile) -> dict:
    """nodeSelector and, for GPU pods, the toleration GPU nodes are usually tainted with."""
    k8s = profile.kubernetes
    spec = {"nodeSelector": dict(k8s.node_selector)} if k8s.node_selector else {}
    if k8s.gpus_per_pod:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def shm_volume(profile: DeploymentProfile) -> dict:
    """/dev/shm as a memory-backed emptyDir of the profile's size (container runtimes give 64 MiB,
    too small for the python backend: Triton's python_backend README)."""
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(profile.shm.dev_shm_bytes)}}


def _probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 5}


def deployment(profile: DeploymentProfile, fleet: Fleet) -> dict:
    k8s = profile.kubernetes
    volumes = [shm_volume(profile), {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    init = []
    if fleet.repo_uri.startswith("pvc://"):
        claim, _, sub_path = fleet.repo_uri[len("pvc://"):].partition("/")
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        models_mount = {"name": "models", "mountPath": MODELS, "readOnly": True, **({"subPath": sub_path} if sub_path else {})}
    else:
        volumes.append({"name": "models", "emptyDir": {}})
        models_mount = {"name": "models", "mountPath": MODELS, "readOnly": True}
        fetch = {"name": "fetch-model-repository", "image": fleet.initializer_image, "args": [fleet.repo_uri, MODELS],
                 "volumeMounts": [{"name": "models", "mountPath": MODELS}, {"name": "tmp", "mountPath": "/tmp"}],
                 "env": [{"name": "HOME", "value": "/tmp"}],
                 "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
                 "securityContext": restricted_container()}
        if fleet.storage_secret:
            fetch["envFrom"] = [{"secretRef": {"name": fleet.storage_secret}}]
        init.append(fetch)
    server = {
        "name": "tritonserver", "image": fleet.image, "command": ["tritonserver"], "args": server_args(profile),
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORTS.items()],
        # Startup: models (TensorRT engines, DPT) may take minutes to load; only then do the others count.
        "startupProbe": _probe("/v2/health/ready", 10, max(1, k8s.startup_seconds // 10)),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "resources": resources(profile),
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "volumeMounts": [models_mount, {"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted_container(),
    }
    pod = {"securityContext": pod_security(), "automountServiceAccountToken": False,
           # In-flight pipelines may take a while; Triton stops taking requests on SIGTERM.
           "terminationGracePeriodSeconds": 120, **scheduling(profile), "containers": [server], "volumes": volumes}
    if init:
        pod["initContainers"] = init
    selector = labels(fleet, "serving")
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["metrics"]),
                   "prometheus.io/path": "/metrics"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": fleet.name, "labels": selector},
        "spec": {"replicas": k8s.min_replicas, "selector": {"matchLabels": selector},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": selector, "annotations": annotations}, "spec": pod}},
    }


def services(fleet: Fleet) -> list[dict]:
    """A ClusterIP Service, and a headless one: gRPC keeps one HTTP/2 connection per client, so a
    ClusterIP spreads connections, not requests; clients that balance per request (``dns:///`` with
    round_robin, or rfad-client with several endpoints) resolve the pods through the headless one."""
    selector = labels(fleet, "serving")
    ports = [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"} for name, port in PORTS.items()]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": fleet.name, "labels": selector},
         "spec": {"type": "ClusterIP", "selector": selector, "ports": ports}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{fleet.name}-pods", "labels": selector},
         "spec": {"clusterIP": "None", "selector": selector, "ports": ports}},
    ]


def autoscaler(profile: DeploymentProfile, fleet: Fleet) -> dict:
    k8s = profile.kubernetes
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": fleet.name, "labels": labels(fleet, "serving")},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": fleet.name},
            "minReplicas": k8s.min_replicas, "maxReplicas": k8s.max_replicas,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": QUEUE_METRIC},
                                                  "target": {"type": "AverageValue",
                                                             "averageValue": str(k8s.queue_target_us)}}}],
            # A new GPU pod takes minutes to load its engines: scale up at once, down slowly.
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                                     "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                         "scaleDown": {"stabilizationWindowSeconds": 600,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]}},
        },
    }


def adapter_rule() -> dict:
    """prometheus-adapter's rule (Helm values of prometheus-community/prometheus-adapter) that
    turns Triton's counters into :data:`QUEUE_METRIC`: microseconds in the queue per successful
    request over the last minute, per pod."""
    series = f'model="{PIPELINE_MODEL}"'
    query = (f"avg(delta(nv_inference_queue_duration_us{{<<.LabelMatchers>>,{series}}}[1m]) / "
             f"(1 + delta(nv_inference_request_success{{<<.LabelMatchers>>,{series}}}[1m]))) by (<<.GroupBy>>)")
    return {"rules": {"custom": [{
        "seriesQuery": f'nv_inference_queue_duration_us{{{series},namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "nv_inference_queue_duration_us", "as": QUEUE_METRIC},
        "metricsQuery": query,
    }]}}


def disruption_budget(fleet: Fleet) -> dict:
    """Voluntary disruptions (node drains, upgrades) take one serving pod at a time."""
    selector = labels(fleet, "serving")
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": fleet.name, "labels": selector},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}}


def network_policy(fleet: Fleet) -> dict:
    """Inference ports only from pods labelled as rfad clients (any namespace); metrics only from
    the monitoring namespace. Kubelet probes are not pod traffic and stay allowed."""
    selector = labels(fleet, "serving")
    key, value = fleet.client_label
    clients = {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {key: value}}}],
               "ports": [{"protocol": "TCP", "port": PORTS["http"]}, {"protocol": "TCP", "port": PORTS["grpc"]}]}
    monitoring = {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": fleet.monitoring_namespace}}}],
                  "ports": [{"protocol": "TCP", "port": PORTS["metrics"]}]}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": fleet.name, "labels": selector},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": [clients, monitoring]}}
