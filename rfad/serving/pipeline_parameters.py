"""The ``rfad_pipeline`` model's config parameters: names, defaults, judge modes and their checks.

``rfad-export triton-repo`` writes them into the model's ``config.pbtxt``
(``export/triton_config.pipeline_config``) and the model reads them back when it loads
(``triton_repo/rfad_pipeline/1/model.py``), both through :class:`PipelineParameters`, so a
default or a judge mode is declared here only. A parameter the model does not know, or a value
it cannot use (for the repository it sits in), is a :class:`PipelineParameterError` naming the
parameter, raised while the model loads: the server then refuses to start instead of serving
requests differently from what the repository says (a misspelt judge mode is not "no judge").
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from rfad.components.registry import components_in
from rfad.contract import DEFAULT_LIMITS, DEFAULTS, JUDGE_MODEL, Limits

# How rfad_pipeline judges its candidates:
#   ensemble   - one BLS call per attempt to the rfad_judge ensemble;
#   components - per attempt one BLS call each to depth, saliency and rfnet, the caption
#                encoded once per request (rfnet_text) with the caption tokenizer in the assets;
#   none       - no judge: num_images candidates are generated once and returned unjudged.
JUDGE_MODES = ("ensemble", "components", "none")
# The default where the repository has the judge: one call to rfad_judge per attempt, which is
# not slower (benchmarks/suite/pipeline_bench.py measures both routes; docs/performance.md).
DEFAULT_JUDGE = "ensemble"
JUDGE_COMPONENTS = components_in("judge")  # the models judge=components calls
CAPTION_TOKENIZER = "caption_tokenizer"  # folder in the pipeline model's assets (RFNet's tokenizer)
# Parameters Triton's python backend reads itself; they may appear beside ours.
BACKEND_PARAMETERS = ("EXECUTION_ENV_PATH", "FORCE_CPU_ONLY_INPUT_TENSORS")
INT32_MAX = 2**31 - 1  # max_attempts travels as INT32: a larger cap could never be asked for


class PipelineParameterError(ValueError):
    """A parameter of rfad_pipeline's config is unknown or unusable; the message names it.

    ``parameter`` is its name, ``detail`` what is wrong with it (the message is both).
    """

    def __init__(self, parameter: str, detail: str):
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail


@dataclass(frozen=True)
class PipelineParameters:
    """What one ``rfad_pipeline`` model serves: the attempts cap, the canvas side, the judge route,
    and what a deployment profile sets (:mod:`rfad.deploy.profiles`).

    ``max_attempts_cap``: the largest ``max_attempts`` a request may ask for; at least the
    default ``max_attempts`` (a request that sends none would otherwise be refused).
    ``canvas_size``: the canvas side in pixels (a valid :class:`rfad.canvas.CanvasSpec` side).
    ``judge``: one of :data:`JUDGE_MODES`.
    ``default_steps``: the DDIM steps of a request that sends none (within the contract's limits).
    ``candidates_cap``: the largest ``candidates`` a request may ask for (the component models
    were sized for twice that batch); at least the default ``candidates``.
    """

    max_attempts_cap: int = DEFAULT_LIMITS.max_attempts[1]
    canvas_size: int = DEFAULTS.canvas_size
    judge: str = DEFAULT_JUDGE
    default_steps: int = DEFAULTS.steps
    candidates_cap: int = DEFAULT_LIMITS.candidates[1]

    def __post_init__(self) -> None:
        from rfad.canvas import CanvasSpec

        for name in ("max_attempts_cap", "canvas_size", "default_steps", "candidates_cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PipelineParameterError(name, f"expected an integer, got {value!r}")
        low = DEFAULTS.max_attempts
        if not low <= self.max_attempts_cap <= INT32_MAX:
            why = (f"below the default max_attempts ({low}) every request that sends none would be refused"
                   if self.max_attempts_cap < low else "max_attempts travels as INT32")
            raise PipelineParameterError(
                "max_attempts_cap", f"{self.max_attempts_cap} is outside [{low}, {INT32_MAX}] ({why})")
        try:
            CanvasSpec(width=self.canvas_size, height=self.canvas_size)
        except ValueError as exc:
            # CanvasSpec names its own field (width); the rule is what matters here.
            rule = str(exc).split(": ", 1)[-1]
            raise PipelineParameterError("canvas_size", f"{self.canvas_size} is not a canvas side: {rule}") from None
        for name, low, high in (("default_steps", *DEFAULT_LIMITS.steps),
                                ("candidates_cap", DEFAULTS.candidates, DEFAULT_LIMITS.candidates[1])):
            if not low <= getattr(self, name) <= high:
                raise PipelineParameterError(name, f"{getattr(self, name)} is outside [{low}, {high}]")
        if self.judge not in JUDGE_MODES:
            raise PipelineParameterError("judge", f"{self.judge!r} is not one of {', '.join(JUDGE_MODES)}")

    @classmethod
    def from_config(cls, parameters: dict[str, str]) -> "PipelineParameters":
        """Parse a model config's string parameters; absent ones take their defaults."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(parameters) - set(names) - set(BACKEND_PARAMETERS))
        if unknown:
            raise PipelineParameterError(unknown[0], f"unknown parameter (rfad_pipeline reads {', '.join(names)}, "
                                                     f"and Triton's {', '.join(BACKEND_PARAMETERS)})")
        values: dict[str, object] = {}
        for name in names:
            if name not in parameters:
                continue
            text = parameters[name].strip()
            if name == "judge":
                values[name] = text
                continue
            try:
                values[name] = int(text)
            except ValueError:
                raise PipelineParameterError(name, f"expected an integer, got {parameters[name]!r}") from None
        return cls(**values)

    def to_config(self) -> dict[str, str]:
        """The string parameters of a model config (what :meth:`from_config` reads back)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    def limits(self) -> Limits:
        """The request limits this model enforces: the contract's, with ``max_attempts`` and
        ``candidates`` capped."""
        return replace(DEFAULT_LIMITS, max_attempts=(DEFAULT_LIMITS.max_attempts[0], self.max_attempts_cap),
                       candidates=(DEFAULT_LIMITS.candidates[0], self.candidates_cap))

    def check_judge(self, repository: str | Path, assets: str | Path) -> None:
        """Raise :class:`PipelineParameterError` if ``judge`` cannot work in ``repository`` (the
        model repository folder) with the pipeline model's ``assets`` folder."""
        repository, assets = Path(repository), Path(assets)

        def served(model: str) -> bool:
            return (repository / model / "config.pbtxt").is_file()

        if self.judge == "ensemble" and not served(JUDGE_MODEL):
            raise PipelineParameterError("judge", f"'ensemble' needs the {JUDGE_MODEL} model, which {repository} does "
                                         "not have (write the repository with the judge components, or judge 'none')")
        if self.judge == "components":
            missing = [name for name in JUDGE_COMPONENTS if not served(name)]
            if not (assets / CAPTION_TOKENIZER).is_dir():
                missing.append(f"{CAPTION_TOKENIZER} (in {assets})")
            if missing:
                raise PipelineParameterError("judge", f"'components' needs {', '.join(missing)}, missing from "
                                             f"{repository} (write the repository with the judge components, or "
                                             "judge 'none')")
