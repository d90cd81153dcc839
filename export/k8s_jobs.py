"""The RF1M-scale stages as Kubernetes Jobs: map preparation over shards, and multi-node training.

- ``prepare``: an Indexed Job of ``prepare_shards`` pods, pod *i* running
  ``rfad-data prepare --shard i/N`` (one GPU each; the command is resumable, so a retried pod
  computes only the maps still missing);
- ``train``: an Indexed Job of ``train_nodes`` pods, each ``torchrun`` with
  ``train_gpus_per_node`` processes, rendezvous at pod 0 through a headless Service (the pods'
  stable names ``<job>-<index>.<service>``); a restarted container continues from the latest
  checkpoint (``--resume`` when one exists).

Both read and write one shared volume (a ReadWriteMany PersistentVolumeClaim) at /data with the
layout :data:`DATA_LAYOUT`; a kustomize patch changes paths or arguments.
"""

from __future__ import annotations

import shlex

from rfad.deploy.profiles import DeploymentProfile
from rfad.export.k8s_serving import Fleet, labels, pod_security, restricted_container, scheduling

DATA = "/data"
DATA_LAYOUT = {
    "manifest": f"{DATA}/rf1m/manifest.jsonl",  # rfad-data import-rf1m output
    "depth": f"{DATA}/models/dpt-large",
    "saliency": f"{DATA}/models/u2net.pth",
    "maps": f"{DATA}/rf1m-maps",  # rfad-data prepare output: manifest.jsonl + depth/ + saliency/
    "resnet": f"{DATA}/models/resnet-50",
    "roberta": f"{DATA}/models/roberta-base",
    "models": f"{DATA}/models/sd15",  # a model set (rfad-models.json) for RFFT
    "runs": f"{DATA}/runs",
}
RENDEZVOUS_PORT = 29500
INDEX = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}


def job_volumes(data_claim: str, shm: str) -> list[dict]:
    # /dev/shm: DataLoader workers and NCCL pass tensors through it.
    return [{"name": "data", "persistentVolumeClaim": {"claimName": data_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
            {"name": "tmp", "emptyDir": {}}]


def _container(name: str, fleet: Fleet, command: list[str], gpus: int, cpu: str, memory: int, env: list[dict]) -> dict:
    return {"name": name, "image": fleet.image, "command": command,
            "env": [{"name": "HOME", "value": "/tmp"}, *env],
            "resources": {"requests": {"cpu": cpu, "memory": str(memory)},
                          "limits": {"memory": str(memory), "nvidia.com/gpu": str(gpus)}},
            "volumeMounts": [{"name": "data", "mountPath": DATA}, {"name": "dshm", "mountPath": "/dev/shm"},
                             {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": restricted_container()}


def prepare_job(profile: DeploymentProfile, fleet: Fleet, data_claim: str) -> dict:
    shards = profile.kubernetes.prepare_shards
    name = f"{fleet.name}-prepare"
    args = ["rfad-data", "prepare", "--manifest", DATA_LAYOUT["manifest"], "--depth", DATA_LAYOUT["depth"],
            "--saliency", DATA_LAYOUT["saliency"], "--out", DATA_LAYOUT["maps"],
            "--shard", f"$(SHARD_INDEX)/{shards}", "--device", "cuda"]
    container = _container("prepare", fleet, args, 1, "4", profile.kubernetes.prepare_memory,
                           [{"name": "SHARD_INDEX", "valueFrom": INDEX}])
    pod = {"restartPolicy": "Never", "securityContext": pod_security(), "automountServiceAccountToken": False,
           **scheduling(profile), "containers": [container], "volumes": job_volumes(data_claim, "2Gi")}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels(fleet, "prepare")},
            "spec": {"completionMode": "Indexed", "completions": shards, "parallelism": shards,
                     "backoffLimitPerIndex": 3, "maxFailedIndexes": 0,
                     "template": {"metadata": {"labels": labels(fleet, "prepare")}, "spec": pod}}}


def train_arguments(stage: str) -> list[str]:
    """``rfad-train`` arguments of ``stage`` on the data layout (bf16 on A100/H100)."""
    out = f"{DATA_LAYOUT['runs']}/{stage}"
    if stage == "rfnet":
        return ["rfnet", "--data", DATA_LAYOUT["maps"], "--resnet", DATA_LAYOUT["resnet"], "--roberta",
                DATA_LAYOUT["roberta"], "--out", out, "--mixed-precision", "bf16"]
    if stage == "rfft":
        return ["rfft", "--models", DATA_LAYOUT["models"], "--rfnet", f"{DATA_LAYOUT['runs']}/rfnet", "--data",
                DATA_LAYOUT["maps"], "--out", out, "--mixed-precision", "bf16", "--grad-checkpointing"]
    raise ValueError(f"--train: {stage!r} is not rfnet or rfft")


def train_job(profile: DeploymentProfile, fleet: Fleet, data_claim: str, stage: str) -> list[dict]:
    """The training Job and the headless Service its pods find each other through."""
    k8s = profile.kubernetes
    name = f"{fleet.name}-train-{stage}"
    out = f"{DATA_LAYOUT['runs']}/{stage}"
    torchrun = ["torchrun", f"--nnodes={k8s.train_nodes}", f"--nproc-per-node={k8s.train_gpus_per_node}",
                '--node-rank="$NODE_RANK"', f"--master-addr={name}-0.{name}", f"--master-port={RENDEZVOUS_PORT}",
                "-m", "rfad.trainer.cli", *train_arguments(stage)]
    # A restarted container continues the run: --resume once a checkpoint exists (a fresh run
    # with --resume, or a rerun without it, is refused by rfad-train).
    script = (f"resume=; if ls {shlex.quote(out)}/checkpoints/step-* >/dev/null 2>&1; then resume=--resume; fi; "
              f"exec {' '.join(torchrun)} $resume")
    gpus = k8s.train_gpus_per_node
    container = _container("train", fleet, ["sh", "-c", script], gpus, str(6 * gpus), k8s.train_memory_per_gpu * gpus,
                           [{"name": "NODE_RANK", "valueFrom": INDEX}])
    container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}]
    pod = {"restartPolicy": "OnFailure", "subdomain": name, "securityContext": pod_security(),
           "automountServiceAccountToken": False, **scheduling(profile), "containers": [container],
           "volumes": job_volumes(data_claim, "16Gi")}
    selector = {**labels(fleet, "train"), "rfad/job": name}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": selector},
               "spec": {"clusterIP": "None", "selector": selector, "publishNotReadyAddresses": True,
                        "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}]}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": selector},
           "spec": {"completionMode": "Indexed", "completions": k8s.train_nodes, "parallelism": k8s.train_nodes,
                    "backoffLimit": 3 * k8s.train_nodes,
                    "template": {"metadata": {"labels": selector}, "spec": pod}}}
    return [service, job]
