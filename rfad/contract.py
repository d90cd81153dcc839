"""The generation request contract: fields, defaults and limits, in one torch-free module.

The in-process ``rfad generate``, the Triton ``rfad_pipeline`` model and the gRPC client all
validate against these numbers, so a limit is changed in one place. Nothing here imports
torch, diffusers or numpy: ad systems install the client without them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import NamedTuple

CLASS_NAMES = ("Available", "Space Mismatch", "Size Mismatch", "Indistinctiveness", "Shape Hallucination")
# What an RFNet ablation can switch off (RFNetConfig.ablate, `rfad-train rfnet --ablate`).
RFNET_ABLATIONS = ("product", "caption", "depth", "saliency", "filter")

MAX_SEED = 2**63 - 1  # seeds travel as INT64 over Triton
# Triton's default ports: where rfad-serve listens, the client looks and the manifests expose.
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


class InvalidRequest(ValueError):
    """A request field is missing, of the wrong type, or outside its limits; the message names the field."""


@dataclass(frozen=True)
class Limits:
    """Bounds of every numeric request field (inclusive). ``max_attempts`` is the server's hard cap."""

    steps: tuple[int, int] = (1, 150)
    guidance_scale: tuple[float, float] = (0.0, 30.0)
    controlnet_scale: tuple[float, float] = (0.0, 2.0)
    eta: tuple[float, float] = (0.0, 1.0)
    seed: tuple[int, int] = (0, MAX_SEED)
    num_images: tuple[int, int] = (1, 8)
    candidates: tuple[int, int] = (1, 8)
    max_attempts: tuple[int, int] = (1, 20)
    threshold: tuple[float, float] = (0.0, 1.0)
    screen_at: tuple[float, float] = (0.0, 1.0)  # exclusive at both ends: see check_screening
    screen_threshold: tuple[float, float] = (0.0, 1.0)
    prompt_chars: int = 2000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Defaults:
    """What a request or a command that gives no value gets: the one home of every default.

    ``GenerationSettings`` and ``CanvasSpec`` take their field defaults from here, the commands'
    flags and the served pipeline from those, and the contract's docs below are formatted from
    these values. ``canvas_size`` is the canvas side in pixels (the served pipeline's
    ``canvas_size`` parameter); ``product_scale`` the largest product side as a fraction of it.
    """

    steps: int = 40
    guidance_scale: float = 7.5
    controlnet_scale: float = 1.0
    eta: float = 0.0
    seed: int = 0
    num_images: int = 1
    candidates: int = 1
    max_attempts: int = 5
    threshold: float = 0.5
    # Early screening is off unless a request asks for it; no screening threshold is the default
    # until the screening benchmark (benchmarks/studies/screening/screening_bench.py) has chosen one.
    screen_at: float | None = None
    screen_threshold: float | None = None
    canvas_size: int = 512
    product_scale: float = 0.75


DEFAULTS = Defaults()

# The largest batch the pipeline sends one component model: every candidate of an attempt,
# twice under classifier-free guidance. Component models (Triton max_batch_size, TensorRT
# profiles) must accept it, or a request with the most candidates would fail.
MAX_COMPONENT_BATCH = 2 * DEFAULT_LIMITS.candidates[1]


def check_number(name: str, value, limits: Limits = DEFAULT_LIMITS, integer: bool = False):
    """Return ``value`` if it is a finite number within ``limits.<name>``, else raise :class:`InvalidRequest`."""
    low, high = getattr(limits, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{name}: expected a number, got {type(value).__name__}")
    if integer and not float(value).is_integer():
        raise InvalidRequest(f"{name}: expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise InvalidRequest(f"{name}: must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(f"{name}: {value!r} is outside the allowed range [{low}, {high}]")
    return int(value) if integer else float(value)


def screening_step(screen_at: float, steps: int) -> int:
    """The step s at which early screening judges a candidate: ``screen_at`` x ``steps`` rounded
    half up (s = 0.25 x 40 = 10: after its 10th denoising step, from that step's x0-prediction)."""
    return math.floor(screen_at * steps + 0.5)


def screening_replacements(screen_at: float | None, steps: int) -> int:
    """How many times one candidate slot may be refilled in one attempt: floor(steps / s), so the
    candidates screened out of a slot cost at most ``steps`` denoising steps and an attempt at
    most twice the steps of an unscreened one. 0 with screening off."""
    return 0 if screen_at is None else steps // screening_step(screen_at, steps)


def as_float32(value: float) -> float:
    """``value`` rounded to float32, the precision FP32 request fields travel in: the in-process
    loop, the client's check and the served loop then compute the same screening step."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def check_screening(screen_at, screen_threshold, steps: int,
                    limits: Limits = DEFAULT_LIMITS) -> tuple[float | None, float | None]:
    """Validate the early-screening pair; returns it with ``screen_at`` at float32 precision.

    Off (both None) is the default. ``screen_at`` is a share of the steps in (0, 1) whose
    screening step (:func:`screening_step`) must fall in 1 .. steps - 1: at step 0 nothing is
    predicted yet, at the last step the final judge decides anyway. ``screen_threshold`` (the
    p(Available) below which a screened candidate is replaced) is required with ``screen_at``
    and refused without it. Raises :class:`InvalidRequest` naming the field and the limit.
    """
    if screen_at is None:
        if screen_threshold is not None:
            raise InvalidRequest("screen_threshold: given without screen_at (early screening is off unless screen_at "
                                 "is set)")
        return None, None
    if isinstance(screen_at, bool) or not isinstance(screen_at, (int, float)) or not math.isfinite(screen_at):
        raise InvalidRequest(f"screen_at: expected a finite number, got {screen_at!r}")
    if not 0.0 < screen_at < 1.0:
        raise InvalidRequest(f"screen_at: {screen_at!r} is outside the allowed range (0, 1) (a share of the steps; "
                             "leave it out to switch screening off)")
    screen_at = as_float32(float(screen_at))
    step = screening_step(screen_at, steps)
    if not 1 <= step <= steps - 1:
        raise InvalidRequest(f"screen_at: {screen_at:g} x {steps} steps rounds to step {step}; the screening step "
                             f"must be within 1..{steps - 1} (more steps, or another screen_at)")
    if screen_threshold is None:
        raise InvalidRequest("screen_threshold: required with screen_at (the p(Available) in [0, 1] below which a "
                             "candidate is replaced; there is no default yet)")
    return screen_at, check_number("screen_threshold", screen_threshold, limits)


def candidate_seed_count(candidates: int, max_attempts: int, num_images: int, replacements: int = 0) -> int:
    """How many seeds a request may use: candidate ``i`` (counting across attempts, in draw order)
    uses ``seed + i``. Judged, the loop runs up to ``max_attempts`` attempts of ``candidates``;
    without a judge it runs as many as ``num_images`` needs, which can be more. The rule takes the
    larger, so it does not depend on whether the server has a judge. With early screening each
    slot of an attempt may draw up to ``replacements`` more seeds (:func:`screening_replacements`)."""
    return candidates * (1 + replacements) * max(max_attempts, -(-num_images // candidates))


def check_seed_room(seed: int, candidates: int, max_attempts: int, num_images: int,
                    limits: Limits = DEFAULT_LIMITS, replacements: int = 0) -> None:
    """Raise :class:`InvalidRequest` naming ``seed`` unless every seed the request may use,
    ``seed .. seed + candidate_seed_count(...) - 1``, is within ``limits.seed`` (INT64 on the wire).

    Checked up front, with the other settings, so a request near the top of the seed range is
    refused at once instead of failing after attempts of work; the message gives the largest
    seed this request's candidates, attempts, images and screening allow."""
    count = candidate_seed_count(candidates, max_attempts, num_images, replacements)
    highest = limits.seed[1]
    largest = highest - count + 1
    if seed > largest:
        raise InvalidRequest(f"seed: {seed} is too large for {count} candidate seeds (seed + 0 .. seed + {count - 1} "
                             f"must stay <= {highest}); the largest seed allowed for this request is {largest}")


def check_text(name: str, value, limits: Limits = DEFAULT_LIMITS, allow_empty: bool = True) -> str:
    """Return ``value`` if it is a string of at most ``limits.prompt_chars`` characters."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: expected text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidRequest(f"{name}: must not be empty")
    if len(value) > limits.prompt_chars:
        raise InvalidRequest(f"{name}: {len(value)} characters exceeds the limit of {limits.prompt_chars}")
    return value


# --- The rfad_pipeline model's tensors (Triton) ---------------------------------------------
# Shapes are without a batch dimension: rfad_pipeline has max_batch_size 0 and one request is
# one product. Optional inputs take the GenerationSettings default when absent.

PIPELINE_MODEL = "rfad_pipeline"
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # encoded product image; larger requests are refused unread


@dataclass(frozen=True)
class TensorField:
    """One input or output tensor of the served pipeline, as Triton and tritonclient name it."""

    name: str
    datatype: str  # Triton datatype: BYTES, INT32, INT64, FP32, BOOL
    shape: tuple[int, ...]  # -1 = variable
    optional: bool = False
    doc: str = ""


PIPELINE_INPUTS = (
    TensorField("product_image", "BYTES", (1,), doc="encoded PNG/WebP with alpha (the product cut-out)"),
    TensorField("prompt", "BYTES", (1,), doc=f"background prompt, UTF-8, 1..{DEFAULT_LIMITS.prompt_chars} characters"),
    TensorField("negative_prompt", "BYTES", (1,), optional=True, doc="negative prompt (default empty)"),
    TensorField("caption", "BYTES", (1,), optional=True, doc="product title for RFNet (default empty)"),
    TensorField("seed", "INT64", (1,), optional=True, doc=f"seed of the first candidate (default {DEFAULTS.seed})"),
    TensorField("steps", "INT32", (1,), optional=True, doc=f"DDIM steps (default {DEFAULTS.steps}, or the repository's deployment profile's)"),
    TensorField("guidance_scale", "FP32", (1,), optional=True,
                doc=f"classifier-free guidance (default {DEFAULTS.guidance_scale})"),
    TensorField("controlnet_scale", "FP32", (1,), optional=True,
                doc=f"ControlNet scale (default {DEFAULTS.controlnet_scale})"),
    TensorField("candidates", "INT32", (1,), optional=True,
                doc=f"candidates per attempt, one batch (default {DEFAULTS.candidates}; at most the deployment "
                    "profile's cap)"),
    TensorField("max_attempts", "INT32", (1,), optional=True,
                doc=f"attempts before giving up (default {DEFAULTS.max_attempts}; at most the server's cap, "
                    f"{DEFAULT_LIMITS.max_attempts[1]} unless its repository sets another)"),
    TensorField("num_images", "INT32", (1,), optional=True, doc=f"Available images wanted (default {DEFAULTS.num_images})"),
    TensorField("threshold", "FP32", (1,), optional=True,
                doc=f"p(Available) needed to pass (default {DEFAULTS.threshold})"),
    TensorField("screen_at", "FP32", (1,), optional=True,
                doc=f"early screening: the share of the steps after which each candidate's x0-prediction is judged "
                    f"(default {DEFAULTS.screen_at}: off)"),
    TensorField("screen_threshold", "FP32", (1,), optional=True,
                doc=f"early screening: p(Available) below which a screened candidate is replaced by the next seed "
                    f"(default {DEFAULTS.screen_threshold}: required with screen_at)"),
)

PIPELINE_OUTPUTS = (
    TensorField("images", "BYTES", (-1,), doc="PNG bytes, num_images of them, Available ones first"),
    TensorField("available", "BOOL", (-1,), doc="judged Available, per image"),
    TensorField("probabilities", "FP32", (-1, len(CLASS_NAMES)), doc="class probabilities per image (CLASS_NAMES order)"),
    TensorField("seeds", "INT64", (-1,), doc="seed of each returned image"),
    TensorField("attempts", "INT32", (1,), doc="attempts used"),
    TensorField("screened_seeds", "INT64", (-1,), doc="seeds of the candidates early screening replaced, in draw "
                                                       "order (empty with screening off)"),
    TensorField("screened_steps", "INT32", (-1,), doc="the step at which each of them was screened"),
    TensorField("screened_p", "FP32", (-1,), doc="p(Available) of each one's x0-prediction at that step"),
)

# Which GenerationSettings field each numeric input sets.
SETTINGS_INPUTS = ("seed", "steps", "guidance_scale", "controlnet_scale", "candidates", "max_attempts",
                   "num_images", "threshold", "screen_at", "screen_threshold")


# --- The rfad_judge ensemble's tensors (Triton) ---------------------------------------------
# RFNet's inspection alone, for images made elsewhere: many generated images of one product
# per request, all the same size. max_batch_size 0: the image axis is the request's own.

JUDGE_MODEL = "rfad_judge"
JUDGE_MAX_IMAGES = MAX_COMPONENT_BATCH  # one batch through depth, saliency and RFNet
JUDGE_THRESHOLD = DEFAULTS.threshold  # p(Available) needed when the request sends no threshold


class JudgeInputs(NamedTuple):
    """rfad_judge's inputs; the attributes are the keys code uses, each field's ``name`` the wire name."""

    generated_image: TensorField
    product_image: TensorField
    caption: TensorField
    threshold: TensorField


class JudgeOutputs(NamedTuple):
    probabilities: TensorField
    available: TensorField


JUDGE_INPUTS = JudgeInputs(
    TensorField("generated_image", "BYTES", (-1,),
                doc=f"encoded ad images (PNG/JPEG/WebP), 1..{JUDGE_MAX_IMAGES}, all the same size"),
    TensorField("product_image", "BYTES", (1,), doc="the product cut-out (PNG/WebP with alpha) the ads show"),
    TensorField("caption", "BYTES", (1,), optional=True, doc="product title for RFNet (default empty)"),
    TensorField("threshold", "FP32", (1,), optional=True,
                doc=f"p(Available) needed to be judged Available (default {JUDGE_THRESHOLD})"),
)

JUDGE_OUTPUTS = JudgeOutputs(
    TensorField("probabilities", "FP32", (-1, len(CLASS_NAMES)), doc="class probabilities per image (CLASS_NAMES order)"),
    TensorField("available", "BOOL", (-1,), doc="p(Available) >= threshold, per image"),
)


# --- Request ids and retries (every model, every client) ------------------------------------
# The client gives each request an id (Triton's request id: the server logs it with the outcome
# and returns it in the response), kept across its retries, and numbers its tries in this
# request parameter (1 = first try). A retry is thus visible in the server's log and metrics.
REQUEST_TRY_PARAMETER = "rfad_try"
MAX_REQUEST_ID_LENGTH = 128
