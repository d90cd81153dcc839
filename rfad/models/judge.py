"""Load the judge side of a deployment: RFNet (+ its caption tokenizer), depth and saliency."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rfad.models.folders import ModelFolderError, check_model_folder, check_tokenizer_folder, loading
from rfad.models.maps import DepthEstimator, SaliencyEstimator
from rfad.models.model_set import ModelSet


@dataclass
class JudgeModels:
    """RFNet with the RoBERTa tokenizer saved in its folder, and the two map models it reads;
    ``screen_rfnet``: early screening's own RFNet (same tokenizer, width, image size and classes),
    or None when the main RFNet screens."""

    rfnet: torch.nn.Module
    caption_tokenizer: object
    depth: DepthEstimator
    saliency: SaliencyEstimator
    screen_rfnet: torch.nn.Module | None = None

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        found = {"rfnet": self.rfnet, "depth": self.depth, "saliency": self.saliency}
        return found if self.screen_rfnet is None else {**found, "screen_rfnet": self.screen_rfnet}

    def to(self, device: str | torch.device) -> "JudgeModels":
        for module in self.modules.values():
            module.to(device)
        return self

    def freeze(self) -> "JudgeModels":
        for module in self.modules.values():
            module.eval().requires_grad_(False)
        return self


# What a screening RFNet must share with the main one: the judge's working size (depth and
# saliency run once for both), the caption width and the classes (the same graphs' shapes).
SHARED_CONFIG = ("image_size", "width", "num_classes")


def _load_rfnet(folder, kind: str):
    from transformers import AutoTokenizer

    from rfad.models.rfnet import RFNet

    folder = check_model_folder(folder, kind)
    check_tokenizer_folder(folder, f"{kind} caption tokenizer (saved in the RFNet folder)")
    with loading(kind, folder):
        return RFNet.from_pretrained(folder), AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _load_screen_rfnet(folder, rfnet, caption_tokenizer) -> torch.nn.Module:
    """The screening RFNet of ``folder``, checked against the main one (:data:`SHARED_CONFIG`, tokenizer)."""
    screen, tokenizer = _load_rfnet(folder, "screening RFNet")
    for name in SHARED_CONFIG:
        ours, theirs = getattr(screen.config, name), getattr(rfnet.config, name)
        if ours != theirs:
            raise ModelFolderError(f"screen_rfnet: {folder} has {name} {ours}, the rfnet role's has {theirs}; a "
                                   "screening RFNet shares the judge's image size, width and classes (fine-tune it "
                                   "from the judge: rfad-train rfnet --init)")
    if tokenizer.get_vocab() != caption_tokenizer.get_vocab():
        raise ModelFolderError(f"screen_rfnet: {folder} has another caption tokenizer than the rfnet role's; a "
                               "screening RFNet reads the same tokens (fine-tune it from the judge: rfad-train rfnet "
                               "--init)")
    return screen


def load_judge_models(model_set: ModelSet, device: str | torch.device = "cpu") -> JudgeModels:
    """RFNet (``rfad-train rfnet`` output folder), depth (DPT folder) and saliency (U2-Net) of
    ``model_set``, and its screening RFNet where the set has one."""
    rfnet, caption_tokenizer = _load_rfnet(model_set.require("rfnet"), "RFNet")
    models = JudgeModels(
        rfnet=rfnet,
        caption_tokenizer=caption_tokenizer,
        depth=DepthEstimator.from_pretrained(model_set.require("depth")),
        saliency=SaliencyEstimator.from_pretrained(model_set.require("saliency")),
        screen_rfnet=(None if model_set.screen_rfnet is None
                      else _load_screen_rfnet(model_set.screen_rfnet, rfnet, caption_tokenizer)),
    )
    if torch.device(device).type != "cpu":
        models.to(device)
    return models.freeze()
