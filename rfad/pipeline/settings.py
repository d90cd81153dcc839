"""Settings of one generation request, validated against the contract's limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from rfad.contract import (DEFAULT_LIMITS, DEFAULTS, Limits, check_number, check_screening, check_seed_room,
                           screening_replacements, screening_step)

_INTEGER_FIELDS = ("steps", "seed", "num_images", "candidates", "max_attempts")
_FLOAT_FIELDS = ("guidance_scale", "controlnet_scale", "eta", "threshold")
_SCREENING_FIELDS = ("screen_at", "screen_threshold")  # None: early screening off


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate: DDIM ``steps`` with classifier-free ``guidance_scale`` (CFG off at <= 1),
    ``candidates`` images per attempt, up to ``max_attempts`` attempts until ``num_images`` are
    judged Available (p(Available) >= ``threshold``). Candidate ``i`` (counting across attempts,
    in draw order) uses seed ``seed + i``, so ``seed`` leaves room for them below the INT64 limit
    (:func:`rfad.contract.check_seed_room`). ``screen_at`` / ``screen_threshold`` switch early
    screening on (:mod:`rfad.pipeline.screening`; checks: :func:`rfad.contract.check_screening`).
    Raises :class:`rfad.contract.InvalidRequest` naming the field. Defaults: :data:`rfad.contract.DEFAULTS`.
    """

    steps: int = DEFAULTS.steps
    guidance_scale: float = DEFAULTS.guidance_scale
    controlnet_scale: float = DEFAULTS.controlnet_scale
    eta: float = DEFAULTS.eta
    seed: int = DEFAULTS.seed
    num_images: int = DEFAULTS.num_images
    candidates: int = DEFAULTS.candidates
    max_attempts: int = DEFAULTS.max_attempts
    threshold: float = DEFAULTS.threshold
    screen_at: float | None = DEFAULTS.screen_at
    screen_threshold: float | None = DEFAULTS.screen_threshold
    limits: Limits = field(default=DEFAULT_LIMITS, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _INTEGER_FIELDS:
            object.__setattr__(self, name, check_number(name, getattr(self, name), self.limits, integer=True))
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, check_number(name, getattr(self, name), self.limits))
        screen_at, screen_threshold = check_screening(self.screen_at, self.screen_threshold, self.steps, self.limits)
        object.__setattr__(self, "screen_at", screen_at)
        object.__setattr__(self, "screen_threshold", screen_threshold)
        check_seed_room(self.seed, self.candidates, self.max_attempts, self.num_images, self.limits,
                        self.screen_replacements)

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def screening(self) -> bool:
        return self.screen_at is not None

    @property
    def screen_step(self) -> int | None:
        """The step at which candidates are screened (:func:`rfad.contract.screening_step`), None when off."""
        return None if self.screen_at is None else screening_step(self.screen_at, self.steps)

    @property
    def screen_replacements(self) -> int:
        """Refills one candidate slot may get per attempt (:func:`rfad.contract.screening_replacements`)."""
        return screening_replacements(self.screen_at, self.steps)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in _INTEGER_FIELDS + _FLOAT_FIELDS + _SCREENING_FIELDS}
