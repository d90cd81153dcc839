"""What one ``rfad_pipeline`` request returned, read from the response tensors the contract names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from rfad.client.errors import ServerError
from rfad.contract import CLASS_NAMES, PIPELINE_OUTPUTS, TensorField


@dataclass
class Result:
    """What one generation request returned.

    One entry per returned image in every list, Available images first: ``images`` are PNG
    bytes, ``available`` the verdicts, ``probabilities`` the class probabilities in
    :attr:`class_names` order, ``seeds`` the seed of each image. ``attempts`` is the number of
    attempts the server used; ``latency_s`` the round trip seen by the client; ``request_id`` the
    id the server logged the request under (kept across retries) and ``tries`` how many times it
    was sent (1: no retry). With early screening, ``screened_seeds``, ``screened_steps`` and
    ``screened_p`` say which candidates were replaced, at which step, with which p(Available) (one
    entry per screened candidate, in draw order; empty when screening was off; :attr:`screened`
    pairs them up).
    """

    images: list[bytes]
    available: list[bool]
    probabilities: list[list[float]]
    seeds: list[int]
    attempts: int
    screened_seeds: list[int] = field(default_factory=list)
    screened_steps: list[int] = field(default_factory=list)
    screened_p: list[float] = field(default_factory=list)
    latency_s: float = 0.0
    request_id: str = ""
    tries: int = 1
    class_names: ClassVar[tuple[str, ...]] = CLASS_NAMES

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray], latency_s: float = 0.0, request_id: str = "",
                     tries: int = 1) -> "Result":
        """Build a result from the response tensors named by ``PIPELINE_OUTPUTS``; raises
        :class:`ServerError` when one is missing or their lengths disagree."""
        values = {}
        for spec in PIPELINE_OUTPUTS:
            array = outputs.get(spec.name)
            if array is None:
                raise ServerError(f"the response lacks the output {spec.name!r}", "INTERNAL")
            values[spec.name] = _from_array(spec, np.asarray(array))
        result = cls(**values, latency_s=latency_s, request_id=request_id, tries=tries)
        count = len(result.images)
        if any(len(getattr(result, name)) != count for name in ("available", "probabilities", "seeds")) or any(
                len(row) != len(CLASS_NAMES) for row in result.probabilities):
            raise ServerError(f"malformed response: {count} images, {len(result.available)} verdicts, "
                              f"{len(result.seeds)} seeds, probability rows of "
                              f"{sorted({len(r) for r in result.probabilities})} values", "INTERNAL")
        if not len(result.screened_seeds) == len(result.screened_steps) == len(result.screened_p):
            raise ServerError(f"malformed response: {len(result.screened_seeds)} screened seeds, "
                              f"{len(result.screened_steps)} steps, {len(result.screened_p)} p values", "INTERNAL")
        return result

    @property
    def screened(self) -> list[dict]:
        """The candidates early screening replaced: ``{"seed", "step", "p_available"}`` each, in draw order."""
        return [{"seed": seed, "step": step, "p_available": p}
                for seed, step, p in zip(self.screened_seeds, self.screened_steps, self.screened_p)]

    def verdicts(self) -> list[dict[str, float]]:
        """Per image, the probability of each class by name."""
        return [dict(zip(self.class_names, row)) for row in self.probabilities]

    @property
    def labels(self) -> list[str]:
        """Per image, the most probable class name."""
        return [self.class_names[int(np.argmax(row))] for row in self.probabilities]

    @property
    def best_index(self) -> int | None:
        """Index of the best image: the Available one with the highest p(Available), else the
        highest p(Available) of all; None when no image was returned."""
        if not self.images:
            return None
        return max(range(len(self.images)), key=lambda i: (self.available[i], self.probabilities[i][0]))

    @property
    def best(self) -> bytes | None:
        """PNG bytes of the image at :attr:`best_index` (None when no image was returned)."""
        index = self.best_index
        return None if index is None else self.images[index]

    def save(self, folder: str | os.PathLike, stem: str = "image") -> list[Path]:
        """Write ``folder/{stem}-{i}.png`` for every image; returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, data in enumerate(self.images):
            path = folder / f"{stem}-{i}.png"
            path.write_bytes(data)
            paths.append(path)
        return paths

    def summary(self) -> dict:
        """Everything but the image bytes, JSON-ready."""
        return {"available": self.available, "labels": self.labels, "probabilities": self.verdicts(),
                "seeds": self.seeds, "attempts": self.attempts, "best": self.best_index,
                "screened": self.screened, "latency_s": round(self.latency_s, 4), "request_id": self.request_id,
                "tries": self.tries}


def _from_array(spec: TensorField, array: np.ndarray):
    """One output tensor as Python values: a scalar for shape (1,), else a (nested) list."""
    if spec.datatype == "BYTES":
        values = [bytes(v) for v in array.reshape(-1)]
    elif spec.datatype == "BOOL":
        values = [bool(v) for v in array.reshape(-1)]
    elif spec.datatype.startswith("INT"):
        values = [int(v) for v in array.reshape(-1)]
    else:
        values = array.astype(float).tolist() if len(spec.shape) > 1 else [float(v) for v in array.reshape(-1)]
    if spec.shape == (1,):
        if len(values) != 1:
            raise ServerError(f"output {spec.name!r}: expected one value, got {len(values)}", "INTERNAL")
        return values[0]
    return values
