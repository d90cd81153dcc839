"""The generation request contract: fields, defaults and limits, in one torch-free module.

The in-process ``rfad generate``, the Triton ``rfad_pipeline`` model and the gRPC client all
validate against these numbers, so a limit is changed in one place. Nothing here imports
torch, diffusers or numpy: ad systems install the client without them.
"""

from __future__ import annotations

import math
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


def candidate_seed_count(candidates: int, max_attempts: int, num_images: int) -> int:
    """How many seeds a request may use: candidate ``i`` (counting across attempts) uses
    ``seed + i``. Judged, the loop runs up to ``max_attempts`` attempts of ``candidates``; without
    a judge it runs as many as ``num_images`` needs, which can be more. The rule takes the larger,
    so it does not depend on whether the server has a judge."""
    return candidates * max(max_attempts, -(-num_images // candidates))


def check_seed_room(seed: int, candidates: int, max_attempts: int, num_images: int,
                    limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise :class:`InvalidRequest` naming ``seed`` unless every seed the request may use,
    ``seed .. seed + candidate_seed_count(...) - 1``, is within ``limits.seed`` (INT64 on the wire).

    Checked up front, with the other settings, so a request near the top of the seed range is
    refused at once instead of failing after attempts of work; the message gives the largest
    seed this request's candidates, attempts and images allow."""
    count = candidate_seed_count(candidates, max_attempts, num_images)
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
)

PIPELINE_OUTPUTS = (
    TensorField("images", "BYTES", (-1,), doc="PNG bytes, num_images of them, Available ones first"),
    TensorField("available", "BOOL", (-1,), doc="judged Available, per image"),
    TensorField("probabilities", "FP32", (-1, len(CLASS_NAMES)), doc="class probabilities per image (CLASS_NAMES order)"),
    TensorField("seeds", "INT64", (-1,), doc="seed of each returned image"),
    TensorField("attempts", "INT32", (1,), doc="attempts used"),
)

# Which GenerationSettings field each numeric input sets.
SETTINGS_INPUTS = ("seed", "steps", "guidance_scale", "controlnet_scale", "candidates", "max_attempts",
                   "num_images", "threshold")


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
