"""The generation request contract: fields, defaults and limits, in one torch-free module.

The in-process ``rfad generate``, the Triton ``rfad_pipeline`` model and the gRPC client all
validate against these numbers, so a limit is changed in one place. Nothing here imports
torch, diffusers or numpy: ad systems install the client without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CLASS_NAMES = ("Available", "Space Mismatch", "Size Mismatch", "Indistinctiveness", "Shape Hallucination")

MAX_SEED = 2**63 - 1  # seeds travel as INT64 over Triton


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


def check_text(name: str, value, limits: Limits = DEFAULT_LIMITS, allow_empty: bool = True) -> str:
    """Return ``value`` if it is a string of at most ``limits.prompt_chars`` characters."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: expected text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidRequest(f"{name}: must not be empty")
    if len(value) > limits.prompt_chars:
        raise InvalidRequest(f"{name}: {len(value)} characters exceeds the limit of {limits.prompt_chars}")
    return value
