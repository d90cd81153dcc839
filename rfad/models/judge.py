"""Load the judge side of a deployment: RFNet (+ its caption tokenizer), depth and saliency."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rfad.models.folders import check_model_folder, check_tokenizer_folder, loading
from rfad.models.maps import DepthEstimator, SaliencyEstimator
from rfad.models.model_set import ModelSet


@dataclass
class JudgeModels:
    """RFNet with the RoBERTa tokenizer saved in its folder, and the two map models it reads."""

    rfnet: torch.nn.Module
    caption_tokenizer: object
    depth: DepthEstimator
    saliency: SaliencyEstimator

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"rfnet": self.rfnet, "depth": self.depth, "saliency": self.saliency}

    def to(self, device: str | torch.device) -> "JudgeModels":
        for module in self.modules.values():
            module.to(device)
        return self

    def freeze(self) -> "JudgeModels":
        for module in self.modules.values():
            module.eval().requires_grad_(False)
        return self


def load_judge_models(model_set: ModelSet, device: str | torch.device = "cpu") -> JudgeModels:
    """RFNet (``rfad-train rfnet`` output folder), depth (DPT folder) and saliency (U2-Net) of ``model_set``."""
    from transformers import AutoTokenizer

    from rfad.models.rfnet import RFNet

    folder = check_model_folder(model_set.require("rfnet"), "RFNet")
    check_tokenizer_folder(folder, "RFNet caption tokenizer (saved in the RFNet folder)")
    with loading("RFNet", folder):
        rfnet = RFNet.from_pretrained(folder)
        caption_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    models = JudgeModels(
        rfnet=rfnet,
        caption_tokenizer=caption_tokenizer,
        depth=DepthEstimator.from_pretrained(model_set.require("depth")),
        saliency=SaliencyEstimator.from_pretrained(model_set.require("saliency")),
    )
    if torch.device(device).type != "cpu":
        models.to(device)
    return models.freeze()
