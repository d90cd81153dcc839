"""``--profile`` and the flags that refine it, for ``rfad-export triton-repo`` and ``trt``.

A flag given beside a profile replaces that profile's value; the result must still be a profile
that can work (the rules of :mod:`rfad.deploy.profiles`), or the command stops with one line
naming the flag, the profile and the rule it breaks. Flags left out take the profile's values.
"""

from __future__ import annotations

import dataclasses

from rfad.deploy.profiles import DeploymentProfile, get_profile

# flag -> how it changes the profile
_FLAGS = {
    "--backend": lambda p, v: dataclasses.replace(p, backend=v) if v in p.backends else _refuse(
        f"the profile's backends are {', '.join(p.backends)}"),
    "--max-batch": lambda p, v: dataclasses.replace(
        p, components=dataclasses.replace(p.components, max_batch_size=v),
        overrides=tuple((n, dataclasses.replace(s, max_batch_size=v)) for n, s in p.overrides)),
    "--no-dynamic-batching": lambda p, v: dataclasses.replace(
        p, components=dataclasses.replace(p.components, batching=None),
        overrides=tuple((n, dataclasses.replace(s, batching=None)) for n, s in p.overrides)) if v else p,
    "--pipeline-instances": lambda p, v: dataclasses.replace(p, pipeline=dataclasses.replace(p.pipeline, instances=v)),
    "--max-attempts-cap": lambda p, v: dataclasses.replace(
        p, pipeline=dataclasses.replace(p.pipeline, max_attempts_cap=v)),
    "--canvas-size": lambda p, v: dataclasses.replace(p, pipeline=dataclasses.replace(p.pipeline, canvas_size=v)),
    "--fp16": lambda p, v: dataclasses.replace(p, precision="fp16" if v else "fp32"),
    # rfad-export trt: the engines' largest batch (the components' max_batch_size must fit in it).
    "--max-engine-batch": lambda p, v: dataclasses.replace(p, engines=dataclasses.replace(
        p.engines, batch=(min(p.engines.batch[0], v), min(p.engines.batch[1], v), v))) if p.engines else _refuse(
        "the profile names no TensorRT engines"),
}


_NEGATED = {"--fp16": "--fp32"}  # how a False boolean flag is spelt on the command line


class _Contradiction(ValueError):
    pass


def _refuse(reason: str):
    raise _Contradiction(reason)


def profile_with_flags(name: str | DeploymentProfile, flags: dict[str, object],
                       shown: dict[str, str] | None = None) -> tuple[DeploymentProfile, dict[str, object]]:
    """The profile ``name`` with the given ``flags`` (``{"--max-batch": 8, ...}``; None = not given)
    applied; returns it and the flags that changed it. Raises ValueError with one line, naming
    a flag as ``shown`` spells it on the command (default: as given). ``name`` may be a profile
    itself (one made with ``dataclasses.replace``)."""
    profile = name if isinstance(name, DeploymentProfile) else get_profile(name)
    name = profile.name
    applied = {}
    for flag, value in flags.items():
        if value is None:
            continue
        try:
            changed = _FLAGS[flag](profile, value)
        except KeyError:
            raise ValueError(f"{flag}: not a flag a profile knows ({', '.join(_FLAGS)})") from None
        except ValueError as exc:  # the profile's own rules, or _refuse
            reason = str(exc).split(": ", 1)[-1] if not isinstance(exc, _Contradiction) else str(exc)
            spelt = (shown or {}).get(flag, flag)
            spelt = (spelt if value else _NEGATED.get(spelt, spelt)) if isinstance(value, bool) else f"{spelt} {value}"
            raise ValueError(f"{spelt} contradicts --profile {name}: {reason}") from None
        if changed != profile:
            applied[flag] = value
        profile = changed
    return profile, applied
