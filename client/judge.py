"""Requests to and results of the ``rfad_judge`` model: RFNet's verdict on ad images made elsewhere.

Torch-free like the rest of :mod:`rfad.client`; the contract (names, limits) comes from
:mod:`rfad.contract`, so the client refuses locally what the server would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rfad.client.errors import ServerError, invalid_request
from rfad.client.request import product_bytes
from rfad.contract import (
    CLASS_NAMES,
    DEFAULT_LIMITS,
    JUDGE_INPUTS,
    JUDGE_MAX_IMAGES,
    JUDGE_OUTPUTS,
    InvalidRequest,
    check_number,
    check_text,
)


@dataclass
class JudgeResult:
    """One judge request's verdicts, one entry per image in request order.

    ``probabilities``: the class probabilities in :attr:`class_names` order; ``available``:
    p(Available) >= the threshold; ``latency_s``: the round trip seen by the client;
    ``request_id`` and ``tries``: the id the server logged the request under, and how many times
    it was sent (1: no retry).
    """

    probabilities: list[list[float]]
    available: list[bool]
    latency_s: float = 0.0
    request_id: str = ""
    tries: int = 1
    class_names: ClassVar[tuple[str, ...]] = CLASS_NAMES

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray], latency_s: float = 0.0, request_id: str = "",
                     tries: int = 1) -> "JudgeResult":
        for spec in JUDGE_OUTPUTS:
            if outputs.get(spec.name) is None:
                raise ServerError(f"the response lacks the output {spec.name!r}", "INTERNAL")
        probabilities = np.asarray(outputs["probabilities"], dtype=np.float64)
        available = np.asarray(outputs["available"]).reshape(-1)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(CLASS_NAMES) or len(available) != len(probabilities):
            raise ServerError(f"malformed response: probabilities of shape {list(probabilities.shape)}, "
                              f"{len(available)} verdicts", "INTERNAL")
        return cls(probabilities.tolist(), [bool(v) for v in available], latency_s, request_id, tries)

    @property
    def labels(self) -> list[str]:
        """Per image, the most probable class name."""
        return [self.class_names[int(np.argmax(row))] for row in self.probabilities]

    def verdicts(self) -> list[dict]:
        """Per image: ``available``, ``label`` and the probability of each class by name."""
        return [{"available": ok, "label": label, "probabilities": dict(zip(self.class_names, row))}
                for ok, label, row in zip(self.available, self.labels, self.probabilities)]


def build_judge_request(images: Sequence, product, caption: str = "", threshold: float | None = None
                        ) -> dict[str, np.ndarray]:
    """The validated ``rfad_judge`` request tensors by contract input name.

    ``images``: 1..``JUDGE_MAX_IMAGES`` paths, encoded bytes or PIL images; ``product``: the
    cut-out. Raises :class:`rfad.client.InvalidRequestError` naming the field (and an image's index).
    """
    if isinstance(images, (bytes, str)) or not isinstance(images, Sequence):
        raise invalid_request("generated_image: expected a list of images")
    if not 1 <= len(images) <= JUDGE_MAX_IMAGES:
        raise invalid_request(f"generated_image: {len(images)} images; send 1 to {JUDGE_MAX_IMAGES} per request")
    tensors = {
        "generated_image": np.array([product_bytes(image, f"generated_image[{i}]") for i, image in enumerate(images)],
                                    dtype=np.object_),
        "product_image": np.array([product_bytes(product)], dtype=np.object_),
    }
    try:
        if check_text("caption", caption):
            tensors["caption"] = np.array([caption.encode("utf-8")], dtype=np.object_)
        if threshold is not None:
            tensors["threshold"] = np.array([check_number("threshold", threshold, DEFAULT_LIMITS)], dtype=np.float32)
    except InvalidRequest as exc:
        raise invalid_request(str(exc)) from None
    names = [field.name for field in JUDGE_INPUTS]
    return {name: tensors[name] for name in names if name in tensors}  # contract order
