"""Deployment profiles: one frozen declaration per target (``cpu``, ``edge``, ``datacenter``).

A profile fixes how the exported models are served on one kind of machine: per component the
Triton instance kind and count, ``max_batch_size`` and the dynamic batcher; for ``rfad_pipeline``
its instances, default steps and the caps on ``max_attempts`` and candidates; the precision; the
TensorRT optimisation profile; the python backend's shared memory; the memory it was sized for;
and, for the GPU profiles, the Kubernetes sizing. ``rfad-export triton-repo``, ``rfad-export trt``
and ``rfad-export k8s`` read these objects; nothing else restates their numbers, and
``docs/deploying.md`` shows them through :func:`rfad.deploy.table.profiles_table`.

The rules that tie the numbers together (a component must take the largest batch the pipeline
sends it, an engine the largest batch Triton may form, the canvas must lie inside the engine's
image range, ...) are checked when a profile is built, so a profile that cannot work does not
exist. Sizes are bytes; batch sizes count images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rfad.contract import DEFAULT_LIMITS, DEFAULTS, JUDGE_MAX_IMAGES, MAX_COMPONENT_BATCH
from rfad.deploy.images import NGC_24_10, NGC_24_10_IGPU, ServingImage

KINDS = ("KIND_CPU", "KIND_GPU")
PRECISIONS = ("fp32", "fp16")
BACKENDS = ("python", "onnxruntime", "tensorrt")
MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Batching:
    """Triton's dynamic batcher on a component model: dispatch as soon as a preferred batch size
    is reached, else after ``max_queue_delay_us``."""

    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0


@dataclass(frozen=True)
class ComponentServing:
    """How Triton serves one component model. ``batching`` None: no dynamic batcher (requests run
    as they come, one at a time per instance)."""

    kind: str
    count: int
    max_batch_size: int
    batching: Batching | None


@dataclass(frozen=True)
class PipelineServing:
    """``rfad_pipeline`` (python BLS): ``instances`` requests whose loops run at once; requests that
    omit ``steps`` get ``default_steps``; ``max_attempts`` and ``candidates`` above the caps are
    refused (INVALID_ARGUMENT). ``judge_images_cap`` bounds the images of one ``rfad_judge``
    request. ``canvas_size``: side of the square canvas the loop paints."""

    instances: int
    default_steps: int
    max_attempts_cap: int
    candidates_cap: int
    judge_images_cap: int
    canvas_size: int = DEFAULTS.canvas_size

    @property
    def largest_component_batch(self) -> int:
        """The largest batch the pipeline (or one judge request) sends a component model: every
        candidate of an attempt, twice under classifier-free guidance."""
        return max(2 * self.candidates_cap, self.judge_images_cap)


@dataclass(frozen=True)
class EngineShapes:
    """A TensorRT optimisation profile over batch and square image side: (min, opt, max) each.
    ``image`` min == max is a static-shape engine (smaller, faster to build, one resolution)."""

    batch: tuple[int, int, int]
    image: tuple[int, int, int]

    @property
    def static_image(self) -> bool:
        return self.image[0] == self.image[2]


@dataclass(frozen=True)
class SharedMemory:
    """The python backend's shared memory (Triton's ``--backend-config=python,...``): each python
    model instance starts with ``default_byte_size`` and grows by ``growth_byte_size``; all of them
    live in ``/dev/shm``, which gets ``dev_shm_bytes`` (a memory-backed emptyDir in Kubernetes;
    None: the host's own /dev/shm, as on a workstation)."""

    default_byte_size: int
    growth_byte_size: int
    dev_shm_bytes: int | None


@dataclass(frozen=True)
class MemoryBudget:
    """What the profile was sized for. ``model_bytes``: memory the served models may take (GPU
    memory; on a unified-memory Jetson the share of its RAM left to Triton; on cpu the RAM).
    ``host_bytes``: RAM of the server's pod or host. Weight sizes against it are arithmetic
    (:mod:`rfad.deploy.memory`); activation peaks are not measured here and must fit in what is left."""

    device: str
    model_bytes: int
    host_bytes: int
    unified: bool = False  # CPU and GPU share one memory (Jetson)


@dataclass(frozen=True)
class KubernetesSizing:
    """Per serving pod and for the fleet: replicas scaled between ``min_replicas`` and
    ``max_replicas`` on the average queue time per ``rfad_pipeline`` request (``queue_target_us``);
    resources of the tritonserver container; nodes it may run on. ``prepare_shards`` and
    ``train_nodes`` x ``train_gpus_per_node`` size the RF1M data and training Jobs (``prepare_shards``
    0: the profile runs none; an edge fleet serves, it does not prepare RF1M or train).

    ``gpu_products``: the ``nvidia.com/gpu.product`` node labels served, one Deployment (and one
    engine build) each, since a TensorRT engine runs only on the GPU model it was built on (empty:
    the operator must name them). ``step_seconds`` and ``attempt_seconds`` estimate one denoising
    step at the pipeline's largest batch and one attempt's decode and judging on that GPU: they
    bound the worst-case loop a pod drains before it stops (:mod:`rfad.deploy.drain_times`);
    ``endpoint_drop_seconds`` is how long a stopping pod keeps serving while the Service and DNS
    drop it."""

    min_replicas: int
    max_replicas: int
    queue_target_us: int
    gpus_per_pod: int
    cpu_request: str
    memory_request: int
    memory_limit: int
    node_selector: tuple[tuple[str, str], ...] = ()
    prepare_shards: int = 0
    prepare_memory: int = 16 * GIB  # per shard pod (one GPU: DPT-Large and U2-Net in fp32)
    train_nodes: int = 1
    train_gpus_per_node: int = 1
    train_memory_per_gpu: int = 32 * GIB  # data loading and the frozen models' host copies
    startup_seconds: int = 600  # how long models may take to load before the pod is restarted
    gpu_products: tuple[str, ...] = ()
    step_seconds: float = 0.0
    attempt_seconds: float = 0.0
    endpoint_drop_seconds: int = 15


@dataclass(frozen=True)
class DeploymentProfile:
    name: str
    summary: str
    backend: str  # default backend of the component models
    backends: tuple[str, ...]  # backends the profile can be written with
    precision: str
    components: ComponentServing  # every component model, unless overridden
    pipeline: PipelineServing
    shm: SharedMemory
    memory: MemoryBudget
    engines: EngineShapes | None = None  # None: the profile names no TensorRT engines
    overrides: tuple[tuple[str, ComponentServing], ...] = field(default=())
    kubernetes: KubernetesSizing | None = None  # None: not deployed to Kubernetes (rfad-serve)
    image: ServingImage | None = None  # the NVIDIA release it is served with (None: rfad-serve's own server)

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError(f"profile {self.name!r}: " + "; ".join(problems))

    def component(self, name: str) -> ComponentServing:
        """How component ``name`` (a spec name: ``unet``, ``rfnet``, ...) is served."""
        return dict(self.overrides).get(name, self.components)

    def servings(self) -> tuple[ComponentServing, ...]:
        return (self.components,) + tuple(s for _, s in self.overrides)

    @property
    def gpu(self) -> bool:
        return any(s.kind == "KIND_GPU" for s in self.servings())


def _problems(profile: DeploymentProfile):
    """Every rule the profile breaks, one phrase each (none: the profile can work)."""
    if profile.precision not in PRECISIONS:
        yield f"precision {profile.precision!r} is not one of {', '.join(PRECISIONS)}"
    if not set(profile.backends) <= set(BACKENDS) or profile.backend not in profile.backends:
        yield f"backend {profile.backend!r} must be one of its backends {profile.backends}, all in {BACKENDS}"
    if "tensorrt" in profile.backends and profile.engines is None:
        yield "the tensorrt backend needs engine shapes"
    needed = profile.pipeline.largest_component_batch
    for serving in profile.servings():
        if serving.kind not in KINDS or serving.count < 1:
            yield f"instance group {serving.kind} x {serving.count} (kind in {KINDS}, count >= 1)"
        if serving.max_batch_size < needed:
            yield (f"max_batch_size {serving.max_batch_size} is below the largest batch the pipeline sends "
                   f"({needed}: 2 x candidates_cap {profile.pipeline.candidates_cap}, or judge_images_cap)")
        preferred = serving.batching.preferred_batch_sizes if serving.batching else ()
        if list(preferred) != sorted(set(preferred)) or any(not 1 <= p <= serving.max_batch_size for p in preferred):
            yield f"preferred batch sizes {preferred} must rise within 1..max_batch_size {serving.max_batch_size}"
        if serving.batching and serving.batching.max_queue_delay_us < 0:
            yield "max_queue_delay_us must be >= 0"
        if profile.engines and serving.max_batch_size > profile.engines.batch[2]:
            yield (f"max_batch_size {serving.max_batch_size} exceeds the engines' largest batch "
                   f"{profile.engines.batch[2]} (Triton could form batches no engine accepts)")
    pipeline = profile.pipeline
    if not 1 <= pipeline.default_steps <= DEFAULT_LIMITS.steps[1]:
        yield f"default_steps {pipeline.default_steps} is outside {DEFAULT_LIMITS.steps}"
    # The same bounds rfad_pipeline checks when it loads (rfad.serving.pipeline_parameters):
    # a cap below the default would refuse every request that sends no value.
    if not DEFAULTS.max_attempts <= pipeline.max_attempts_cap < 2**31:
        yield f"max_attempts_cap {pipeline.max_attempts_cap} is below the default max_attempts {DEFAULTS.max_attempts}"
    if not DEFAULTS.candidates <= pipeline.candidates_cap <= DEFAULT_LIMITS.candidates[1]:
        yield f"candidates_cap {pipeline.candidates_cap} is outside {DEFAULTS.candidates}..{DEFAULT_LIMITS.candidates[1]}"
    if not 1 <= pipeline.judge_images_cap <= JUDGE_MAX_IMAGES:
        yield f"judge_images_cap {pipeline.judge_images_cap} is outside 1..{JUDGE_MAX_IMAGES}"
    if pipeline.instances < 1 or pipeline.canvas_size % 8:
        yield "pipeline instances must be >= 1 and canvas_size a multiple of 8"
    engines = profile.engines
    if engines is not None:
        for axis in ("batch", "image"):
            low, opt, high = getattr(engines, axis)
            if not 1 <= low <= opt <= high:
                yield f"engine {axis} range {getattr(engines, axis)} must satisfy 1 <= min <= opt <= max"
        if any(side % 8 for side in engines.image):
            yield f"engine image sides {engines.image} must be multiples of 8 (the VAE's factor)"
        if not engines.image[0] <= pipeline.canvas_size <= engines.image[2]:
            yield f"canvas_size {pipeline.canvas_size} is outside the engines' image range {engines.image}"
    shm = profile.shm
    if shm.default_byte_size < MIB or shm.growth_byte_size <= 0:
        yield "shm default_byte_size must be >= 1 MiB (the python backend's minimum) and growth > 0"
    k8s = profile.kubernetes
    if k8s is not None:
        if not 1 <= k8s.min_replicas <= k8s.max_replicas:
            yield f"replicas {k8s.min_replicas}..{k8s.max_replicas} must satisfy 1 <= min <= max"
        if shm.dev_shm_bytes is None:
            yield "a Kubernetes profile must size /dev/shm (container runtimes give 64 MiB)"
        if k8s.memory_request > k8s.memory_limit or k8s.memory_limit > profile.memory.host_bytes:
            yield "memory request <= limit <= the budget's host_bytes"
        if k8s.prepare_shards < 0 or k8s.train_nodes < 1 or k8s.train_gpus_per_node < 1:
            yield "prepare_shards >= 0, train_nodes >= 1 and train_gpus_per_node >= 1"
        if profile.gpu != (k8s.gpus_per_pod > 0):
            yield "gpus_per_pod must be > 0 exactly when the components run on the GPU"
        if k8s.step_seconds <= 0 or k8s.attempt_seconds <= 0 or k8s.endpoint_drop_seconds < 0:
            yield "step_seconds and attempt_seconds must be > 0 (they bound the drain), endpoint_drop_seconds >= 0"
        if profile.image is None:
            yield "a Kubernetes profile names the image release it is served with"


# No batcher delay on CPU: a request that finds its component idle runs at once. Held for a batch
# partner, a lone request waited out the whole delay at every call (perf_analyzer, tiny shape, 1
# client: 2.7 ms queue per controlnet_unet call at a 2 ms delay, 15-27 calls per attempt), and
# under load requests still batch: those that arrive while the one instance is busy queue and go
# together in its next execution.
_CPU_COMPONENTS = ComponentServing("KIND_CPU", 1, MAX_COMPONENT_BATCH, Batching(max_queue_delay_us=0))

CPU = DeploymentProfile(
    name="cpu",
    summary="What rfad-serve runs on a CPU host (this project's CI): python backend over onnxruntime, fp32",
    backend="python", backends=("python", "onnxruntime"), precision="fp32",
    components=_CPU_COMPONENTS,
    pipeline=PipelineServing(instances=1, default_steps=DEFAULTS.steps,
                             max_attempts_cap=DEFAULT_LIMITS.max_attempts[1], candidates_cap=DEFAULT_LIMITS.candidates[1],
                             judge_images_cap=JUDGE_MAX_IMAGES),
    # The python backend's own defaults (1 MiB, growing by 1 MiB; python_backend README, 24.x),
    # in the host's /dev/shm: rfad-serve passes no --backend-config.
    shm=SharedMemory(default_byte_size=1 * MIB, growth_byte_size=1 * MIB, dev_shm_bytes=None),
    memory=MemoryBudget(device="x86-64 host, 2 cores, 24 GiB RAM, no GPU", model_bytes=24 * GIB, host_bytes=24 * GIB),
)

_EDGE_COMPONENTS = ComponentServing("KIND_GPU", 1, 2, None)

EDGE = DeploymentProfile(
    name="edge",
    summary="One Jetson Orin class GPU (16 GB unified memory): static 512 px fp16 engines, batch 1-2, one request at a time",
    backend="tensorrt", backends=BACKENDS, precision="fp16",
    # One pipeline instance, so nothing arrives at the same time to batch: no dynamic batcher.
    components=_EDGE_COMPONENTS,
    pipeline=PipelineServing(instances=1, default_steps=25, max_attempts_cap=5, candidates_cap=1, judge_images_cap=2),
    engines=EngineShapes(batch=(1, 2, 2), image=(512, 512, 512)),
    shm=SharedMemory(default_byte_size=16 * MIB, growth_byte_size=16 * MIB, dev_shm_bytes=512 * MIB),
    memory=MemoryBudget(device="NVIDIA Jetson Orin NX 16 GB (CPU and GPU share 16 GiB)", model_bytes=10 * GIB,
                        host_bytes=14 * GIB, unified=True),
    # Estimates, not measurements (no Jetson here): SD-1.5 + ControlNet fp16 at 512 px, batch 2.
    kubernetes=KubernetesSizing(min_replicas=1, max_replicas=4, queue_target_us=2_000_000, gpus_per_pod=1,
                                cpu_request="4", memory_request=12 * GIB, memory_limit=14 * GIB,
                                node_selector=(("kubernetes.io/arch", "arm64"),), startup_seconds=900,
                                step_seconds=0.8, attempt_seconds=3.0),
    image=NGC_24_10_IGPU,
)

_DATACENTER_UNET = ComponentServing("KIND_GPU", 2, 16, Batching(preferred_batch_sizes=(8, 16), max_queue_delay_us=5000))

DATACENTER = DeploymentProfile(
    name="datacenter",
    summary="A100/H100 class GPUs (40 GB+): dynamic 256-768 px fp16 engines, batch 1-16, batching across requests, "
            "replicas scaled on queue time",
    backend="tensorrt", backends=BACKENDS, precision="fp16",
    components=ComponentServing("KIND_GPU", 1, 16, Batching(preferred_batch_sizes=(8, 16), max_queue_delay_us=2000)),
    # The denoiser takes nearly all the GPU time: two instances overlap one batch's kernels with
    # the next batch's copies; a 5 ms wait is small beside a step at batch 16.
    overrides=(("controlnet_unet", _DATACENTER_UNET), ("unet", _DATACENTER_UNET), ("controlnet", _DATACENTER_UNET)),
    pipeline=PipelineServing(instances=8, default_steps=DEFAULTS.steps,
                             max_attempts_cap=DEFAULT_LIMITS.max_attempts[1], candidates_cap=DEFAULT_LIMITS.candidates[1],
                             judge_images_cap=JUDGE_MAX_IMAGES),
    engines=EngineShapes(batch=(1, 8, 16), image=(256, 512, 768)),
    shm=SharedMemory(default_byte_size=64 * MIB, growth_byte_size=64 * MIB, dev_shm_bytes=6 * GIB),
    memory=MemoryBudget(device="one NVIDIA A100 or H100, 40 GB or more", model_bytes=40 * GIB, host_bytes=64 * GIB),
    # gpu_products: the labels GPU feature discovery gives A100 80 GB SXM and H100 80 GB SXM nodes.
    # step/attempt seconds: estimates (no GPU here) from the published A100 anchors (DESIGN.md
    # section 8: about 24 ms per guided ControlNet step at batch 2), scaled to batch 16.
    kubernetes=KubernetesSizing(min_replicas=2, max_replicas=16, queue_target_us=1_000_000, gpus_per_pod=1,
                                cpu_request="8", memory_request=32 * GIB, memory_limit=48 * GIB,
                                node_selector=(("nvidia.com/gpu.present", "true"),), prepare_shards=32,
                                train_nodes=2, train_gpus_per_node=8,
                                gpu_products=("NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"),
                                step_seconds=0.2, attempt_seconds=1.0),
    image=NGC_24_10,
)

PROFILES = {profile.name: profile for profile in (CPU, EDGE, DATACENTER)}
DEFAULT_PROFILE = CPU.name  # what rfad-export triton-repo writes: the repository rfad-serve runs here
DEFAULT_GPU_PROFILE = DATACENTER.name  # what rfad-export trt and k8s build for: engines and manifests need a GPU


def get_profile(name: str) -> DeploymentProfile:
    """The profile called ``name``; a one-line error naming the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"--profile: {name!r} is not one of {', '.join(PROFILES)}") from None
