"""The profiles side by side, as the Markdown tables of ``docs/deploying.md``.

Rendered from the declarations (and the arithmetic of :mod:`rfad.deploy.memory`), never typed:
docs/render.py puts :func:`profiles_table` in the page's ``profiles`` block.
"""

from __future__ import annotations

from rfad.deploy.drain_times import drain_times
from rfad.deploy.memory import BYTES_PER_PARAMETER, PARAMETERS, SERVED, shm_need, weight_bytes
from rfad.deploy.profiles import GIB, MIB, PROFILES, ComponentServing, DeploymentProfile

def _size(value: int | None) -> str:
    if value is None:
        return "host's"
    return f"{value // GIB} GiB" if value % GIB == 0 else f"{value / MIB:.0f} MiB"


def _serving(serving: ComponentServing) -> str:
    text = f"{serving.kind.removeprefix('KIND_')} x {serving.count}, max batch {serving.max_batch_size}, "
    if serving.batching is None:
        return text + "no dynamic batcher"
    preferred = "/".join(map(str, serving.batching.preferred_batch_sizes)) or "none"
    return text + f"batcher: preferred {preferred}, delay {serving.batching.max_queue_delay_us / 1000:g} ms"


def _components(profile: DeploymentProfile) -> str:
    lines = [_serving(profile.components)]
    by_serving: dict[ComponentServing, list[str]] = {}
    for name, serving in profile.overrides:
        by_serving.setdefault(serving, []).append(name)
    lines += [f"{', '.join(names)}: {_serving(serving)}" for serving, names in by_serving.items()]
    return "<br>".join(lines)


def _rows(profile: DeploymentProfile) -> dict[str, str]:
    pipeline, engines, shm, memory, k8s = (profile.pipeline, profile.engines, profile.shm, profile.memory,
                                           profile.kubernetes)
    weights = sum(weight_bytes(profile).values())
    rows = {
        "sized for": memory.device,
        "component backend (default; also)": f"`{profile.backend}`; " + ", ".join(
            f"`{b}`" for b in profile.backends if b != profile.backend),
        "precision": f"{profile.precision} ({BYTES_PER_PARAMETER[profile.precision]} B per weight)",
        "component models": _components(profile),
        "rfad_pipeline": f"{pipeline.instances} instance(s), {pipeline.default_steps} steps by default, "
                         f"max_attempts <= {pipeline.max_attempts_cap}, candidates <= {pipeline.candidates_cap}, "
                         f"canvas {pipeline.canvas_size} px",
        "rfad_judge images per request": f"<= {pipeline.judge_images_cap}",
        "TensorRT engines (min/opt/max)": "none" if engines is None else (
            f"batch {'/'.join(map(str, engines.batch))}, "
            + (f"static {engines.image[0]}x{engines.image[0]} px" if engines.static_image
               else f"{'/'.join(map(str, engines.image))} px")),
        "python backend shm (default / growth / /dev/shm)": f"{_size(shm.default_byte_size)} / "
                                                             f"{_size(shm.growth_byte_size)} / {_size(shm.dev_shm_bytes)}",
        "/dev/shm worst case (arithmetic)": _size(shm_need(profile).total),
        "memory for models / host": f"{_size(memory.model_bytes)}{' (unified)' if memory.unified else ''} / "
                                    f"{_size(memory.host_bytes)}",
        "weights at SD-1.5 sizes (arithmetic)": f"{weights / GIB:.2f} GiB, "
                                                f"{(memory.model_bytes - weights) / GIB:.2f} GiB left (estimate)",
    }
    if profile.image is not None:
        image = profile.image
        rows["image (NGC release)"] = (f"`{image.triton_image}`: Triton {image.triton}, CUDA {image.cuda}, TensorRT "
                                       f"{image.tensorrt or 'not declared (unverified)'}, Python {image.python}")
    if k8s is None:
        rows["Kubernetes"] = "not deployed there (`rfad-serve`)"
    else:
        rows["Kubernetes pod"] = (f"{k8s.gpus_per_pod} GPU, {k8s.cpu_request} CPU, memory {_size(k8s.memory_request)}"
                                  f"-{_size(k8s.memory_limit)}, nodes "
                                  + ", ".join(f"`{k}={v}`" for k, v in k8s.node_selector))
        rows["replicas (HPA on queue time)"] = (f"{k8s.min_replicas}-{k8s.max_replicas}, target "
                                                f"{k8s.queue_target_us / 1e6:g} s queue per request")
        rows["GPU models (one Deployment each)"] = (", ".join(f"`{g}`" for g in k8s.gpu_products)
                                                    or "none declared: `rfad-export k8s --gpu-product`")
        times = drain_times(profile)
        rows["drain (estimate): step / worst loop / grace"] = (
            f"{k8s.step_seconds:g} s per step at the largest batch; {times.worst_loop_s} s; {times.grace_s} s")
        rows["RF1M jobs"] = ("none (serving only)" if not k8s.prepare_shards else
                             f"prepare: {k8s.prepare_shards} shards; train: {k8s.train_nodes} node(s) x "
                             f"{k8s.train_gpus_per_node} GPU")
    return rows


def weights_table() -> list[str]:
    """Weights per served component at SD-1.5 sizes: parameters x bytes per parameter."""
    lines = ["| component | parameters | fp32 | fp16 |", "|---|---|---|---|"]
    for name in SERVED["separate"] + ("controlnet_unet",):
        count = PARAMETERS[name]
        lines.append(f"| `{name}` | {count / 1e6:.1f}M | " + " | ".join(
            f"{count * size / GIB:.2f} GiB" for size in BYTES_PER_PARAMETER.values()) + " |")
    return lines


def profiles_table() -> str:
    """The Markdown tables: one row per setting, one column per profile; then the weights."""
    columns = {name: _rows(profile) for name, profile in PROFILES.items()}
    keys = list(dict.fromkeys(key for rows in columns.values() for key in rows))
    lines = ["| | " + " | ".join(f"`{name}`" for name in columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {key} | " + " | ".join(rows.get(key, "—") for rows in columns.values()) + " |" for key in keys]
    return "\n".join([*lines, "", *weights_table()])
