"""Model configs read back from a folder's ``config.json``: every key must be a field of the config
dataclass, so a misspelt or stale key is an error naming it, never silently dropped."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

Config = TypeVar("Config")


def config_from_dict(cls: type[Config], values: Mapping[str, Any], what: str) -> Config:
    """``cls(**values)``; raises ValueError "``what``: unknown fields [...]" for keys that are not fields of ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{what}: unknown fields {unknown}")
    return cls(**values)
