"""Kubernetes objects that serve the model repository: one tritonserver Deployment per GPU model,
the Services, a HorizontalPodAutoscaler and a PodDisruptionBudget per Deployment, and the
NetworkPolicy. Plain dicts, one function per object, every number from the profile.

One Deployment per GPU model (``nvidia.com/gpu.product``), because a TensorRT engine runs only on
the GPU model it was built on; each reads its own repository, REPO_URI/<export hash>/<gpu>, so a
new export is a new prefix and a rollout (:func:`rfad.components.manifest.export_hash`). A pod
stops without losing a request: its preStop hook drains it (:mod:`rfad.serving.draining`) within
the times :mod:`rfad.deploy.drain_times` derives from the profile.

The autoscaler follows NVIDIA's Triton chart (server repository, ``deploy/k8s-onprem``): a
``Pods`` metric of queue time per request, which prometheus-adapter computes from Triton's own
counters (:mod:`rfad.export.k8s_monitoring`); the Deployment sets no ``replicas``, the HPA owns them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rfad.contract import TRITON_PORTS
from rfad.deploy.drain_times import drain_times
from rfad.deploy.profiles import DeploymentProfile
from rfad.export.k8s_tls import FleetSecurity, client_ports, secure_server
from rfad.serving.draining import DRAIN_FILE_ENV

PORTS = TRITON_PORTS  # Triton's defaults, as rfad-serve and the client use them
QUEUE_METRIC = "rfad_pipeline_queue_us_per_request"  # the HPA's metric (rfad.export.k8s_monitoring makes it)
MODELS = "/models"
DRAIN_FILE = "/tmp/rfad-draining"  # on the pod's /tmp emptyDir: fresh in every pod
GPU_LABEL = "nvidia.com/gpu.product"  # set on GPU nodes by NVIDIA's GPU feature discovery
SCRAPE_LABEL = ("rfad/scrape", "true")  # the one Service a ServiceMonitor selects (not the headless one)
# KServe's storage initializer: one container that copies s3://, gs://, https:// (and more) to a
# folder; the same one KServe runs before its own predictors.
INITIALIZER_IMAGE = "kserve/storage-initializer:v0.20.0"
URI_SCHEMES = ("s3://", "gs://", "https://", "hdfs://", "webhdfs://", "pvc://")


@dataclass(frozen=True)
class Fleet:
    """What the operator chooses (the profile chooses the rest). ``repo_uri`` is the prefix under
    which each export's repositories lie (REPO_URI/<export_hash>/<gpu>); ``gpu_products`` the node
    labels served, one Deployment each."""

    name: str
    image: str
    repo_uri: str
    export_hash: str
    gpu_products: tuple[str, ...]
    client_label: tuple[str, str] = ("rfad-client", "true")
    monitoring_namespace: str = "monitoring"
    storage_secret: str | None = None  # a Secret with the credentials the storage initializer reads
    initializer_image: str = INITIALIZER_IMAGE
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    monitor: str = "servicemonitor"  # or "podmonitor"
    monitor_labels: tuple[tuple[str, str], ...] = (("release", "kube-prometheus-stack"),)
    engine_image: str | None = None  # deploy/Dockerfile --target engines (None: no engine-build Jobs)
    catalog_shards: int | None = None  # None: the profile's max_replicas
    security: FleetSecurity | None = None  # TLS and a restricted header (rfad.export.k8s_tls)

    def __post_init__(self) -> None:
        if not self.repo_uri.startswith(URI_SCHEMES):
            raise ValueError(f"--repo-uri: {self.repo_uri!r} must start with one of {', '.join(URI_SCHEMES)}")
        if self.repo_uri.startswith("pvc://") and len(self.repo_uri[6:].strip("/")) == 0:
            raise ValueError(f"--repo-uri: {self.repo_uri!r} names no PersistentVolumeClaim (pvc://CLAIM[/path])")
        if not self.gpu_products:
            raise ValueError("--gpu-product: name the nvidia.com/gpu.product label of the nodes to serve on "
                             "(kubectl get nodes -L nvidia.com/gpu.product)")
        slugs = [gpu_slug(product) for product in self.gpu_products]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"--gpu-product: {', '.join(self.gpu_products)} name the same GPU model twice")
        if self.monitor not in ("servicemonitor", "podmonitor"):
            raise ValueError(f"--monitor: {self.monitor!r} is not servicemonitor or podmonitor")
        if self.catalog_shards is not None and self.catalog_shards < 1:
            raise ValueError(f"--catalog-shards: {self.catalog_shards} must be at least 1")

    def repository_uri(self, product: str) -> str:
        """Where the repository served on ``product`` lies: REPO_URI/<export hash>/<gpu>."""
        return f"{self.repo_uri.rstrip('/')}/{self.export_hash}/{gpu_slug(product)}"

    def deployment_name(self, product: str) -> str:
        return f"{self.name}-{gpu_slug(product)}"


def gpu_slug(product: str) -> str:
    """A GPU label value as a name part: ``NVIDIA-A100-SXM4-80GB`` -> ``nvidia-a100-sxm4-80gb``."""
    slug = re.sub(r"[^a-z0-9]+", "-", product.lower()).strip("-")
    if not slug or len(slug) > 40:
        raise ValueError(f"--gpu-product: {product!r} cannot name a Deployment (1..40 letters and digits)")
    return slug


def labels(fleet: Fleet, component: str) -> dict:
    return {"app.kubernetes.io/name": "rfad", "app.kubernetes.io/instance": fleet.name,
            "app.kubernetes.io/component": component}


def gpu_labels(fleet: Fleet, product: str) -> dict:
    """The serving labels of one GPU model's pods (its Deployment's selector: disjoint from the others')."""
    return {**labels(fleet, "serving"), "rfad/gpu": gpu_slug(product)}


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
    all are, no auto-completed configs (rfad-export writes them whole; auto-completing starts each
    python model's stub once more, importing torch again: half of a start on CPU), exit on a model
    that fails to load (the pod restarts visibly), the exit timeout of the profile's worst-case
    loop, the python backend's shared memory from the profile."""
    shm = profile.shm
    return [f"--model-repository={repository}", "--model-control-mode=none", "--strict-readiness=true",
            "--disable-auto-complete-config", "--exit-on-error=true",
            f"--exit-timeout-secs={drain_times(profile).exit_timeout_s}",
            f"--http-port={PORTS['http']}", f"--grpc-port={PORTS['grpc']}",
            f"--metrics-port={PORTS['metrics']}", "--allow-metrics=true",
            f"--backend-config=python,shm-default-byte-size={shm.default_byte_size}",
            f"--backend-config=python,shm-growth-byte-size={shm.growth_byte_size}"]


def resources(profile: DeploymentProfile) -> dict:
    k8s = profile.kubernetes
    limits = {"memory": str(k8s.memory_limit)}
    if k8s.gpus_per_pod:
        limits["nvidia.com/gpu"] = str(k8s.gpus_per_pod)
    return {"requests": {"cpu": k8s.cpu_request, "memory": str(k8s.memory_request)}, "limits": limits}


def scheduling(profile: DeploymentProfile, product: str | None = None) -> dict:
    """nodeSelector (the profile's, and the GPU model ``product`` when given) and, for GPU pods,
    the toleration GPU nodes are usually tainted with."""
    k8s = profile.kubernetes
    selector = {**dict(k8s.node_selector), **({GPU_LABEL: product} if product else {})}
    spec = {"nodeSelector": selector} if selector else {}
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


def drain_hook(profile: DeploymentProfile) -> dict:
    """The container lifecycle that drains a stopping pod (its preStop runs before SIGTERM)."""
    times = drain_times(profile)
    return {"preStop": {"exec": {"command": [
        "python3", "-m", "rfad.serving.draining", f"--metrics-url=http://127.0.0.1:{PORTS['metrics']}/metrics",
        f"--endpoint-delay={times.endpoint_drop_s}", f"--timeout={times.worst_loop_s}"]}}}


def deployment(profile: DeploymentProfile, fleet: Fleet, product: str) -> dict:
    """The tritonserver Deployment of GPU model ``product``: its pods run only on nodes of that
    model and read the repository built for it. No ``replicas``: its HPA owns them."""
    k8s = profile.kubernetes
    repo_uri = fleet.repository_uri(product)
    volumes = [shm_volume(profile), {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    init = []
    if repo_uri.startswith("pvc://"):
        claim, _, sub_path = repo_uri[len("pvc://"):].partition("/")
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        models_mount = {"name": "models", "mountPath": MODELS, "readOnly": True, **({"subPath": sub_path} if sub_path else {})}
    else:
        volumes.append({"name": "models", "emptyDir": {}})
        models_mount = {"name": "models", "mountPath": MODELS, "readOnly": True}
        fetch = {"name": "fetch-model-repository", "image": fleet.initializer_image, "args": [repo_uri, MODELS],
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
        "env": serving_env(),
        "volumeMounts": [models_mount, {"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
        "lifecycle": drain_hook(profile),
        "securityContext": restricted_container(),
    }
    if fleet.security is not None:
        secure_server(server, volumes, fleet.security)
    pod = {"securityContext": pod_security(), "automountServiceAccountToken": False,
           # Above the preStop drain and Triton's exit timeout together: a draining pod is never killed.
           "terminationGracePeriodSeconds": drain_times(profile).grace_s, **scheduling(profile, product),
           "containers": [server], "volumes": volumes}
    if init:
        pod["initContainers"] = init
    selector = gpu_labels(fleet, product)
    # The repository's export hash on the pod template: a new export rolls the Deployment out.
    annotations = {"rfad/export-hash": fleet.export_hash}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": fleet.deployment_name(product), "labels": selector},
        "spec": {"selector": {"matchLabels": selector},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": selector, "annotations": annotations}, "spec": pod}},
    }


def serving_env() -> list[dict]:
    return [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": DRAIN_FILE_ENV, "value": DRAIN_FILE}]


def services(fleet: Fleet) -> list[dict]:
    """A ClusterIP Service, and a headless one: gRPC keeps one HTTP/2 connection per client, so a
    ClusterIP spreads connections, not requests; clients that balance per request (``dns:///`` with
    round_robin, or rfad-client with several endpoints) resolve the pods through the headless one."""
    selector = labels(fleet, "serving")
    ports = [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"} for name, port in PORTS.items()]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": fleet.name, "labels": {**selector,
                                                                                         SCRAPE_LABEL[0]: SCRAPE_LABEL[1]}},
         "spec": {"type": "ClusterIP", "selector": selector, "ports": ports}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{fleet.name}-pods", "labels": selector},
         "spec": {"clusterIP": "None", "selector": selector, "ports": ports}},
    ]


def autoscaler(profile: DeploymentProfile, fleet: Fleet, target: str, component: str = "serving") -> dict:
    """The HPA of Deployment ``target`` on :data:`QUEUE_METRIC`."""
    k8s = profile.kubernetes
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target, "labels": labels(fleet, component)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
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


def disruption_budget(fleet: Fleet, product: str) -> dict:
    """Voluntary disruptions (node drains, upgrades) take one serving pod of a GPU model at a time
    (one budget per Deployment: a maxUnavailable budget may cover one controller's pods only)."""
    selector = gpu_labels(fleet, product)
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": fleet.deployment_name(product), "labels": selector},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}}


def network_policy(fleet: Fleet) -> dict:
    """Inference ports only from pods labelled as rfad clients (any namespace), the gRPC port only
    under TLS; metrics only from the monitoring namespace. Kubelet probes are not pod traffic and
    stay allowed."""
    selector = labels(fleet, "serving")
    key, value = fleet.client_label
    clients = {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {key: value}}}],
               "ports": [{"protocol": "TCP", "port": port} for port in client_ports(fleet.security, PORTS)]}
    monitoring = {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": fleet.monitoring_namespace}}}],
                  "ports": [{"protocol": "TCP", "port": PORTS["metrics"]}]}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": fleet.name, "labels": selector},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": [clients, monitoring]}}
