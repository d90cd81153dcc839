"""The ResNet-only baseline of the paper's judge table: a ResNet that sees the generated image alone.

The paper compares RFNet (AP 87.58) with a ResNet-50 classifier of the generated image (AP
77.29). Here the ResNet is RFNet's own tiny image backbone (``tiny_rfnet_config().resnet``), with
transformers' classification head, trained like RFNet (AdamW, cross-entropy over the five
classes, lr x0.1 from the middle epoch, the same epochs, batch and image size) on the same rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rfad.contract import CLASS_NAMES
from rfad.models.rfnet import IMAGENET_MEAN, IMAGENET_STD, tiny_rfnet_config
from rfad.trainer.rfnet.dataset import RFNetDataset
from rfad.trainer.rfnet.train import epoch_order


class ResNetOnly(torch.nn.Module):
    """generated image float [B, 3, S, S] in [0, 1] -> logits [B, 5]."""

    def __init__(self, seed: int):
        super().__init__()
        from transformers import ResNetConfig, ResNetForImageClassification

        torch.manual_seed(seed)
        config = ResNetConfig.from_dict({**tiny_rfnet_config().resnet, "num_labels": len(CLASS_NAMES)})
        self.resnet = ResNetForImageClassification(config)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, generated_image: torch.Tensor) -> torch.Tensor:
        return self.resnet(pixel_values=(generated_image - self.mean) / self.std).logits


def train_resnet_only(train: RFNetDataset, epochs: int, batch_size: int, lr: float, seed: int,
                      weight_decay: float = 0.01) -> ResNetOnly:
    """Train on ``train`` (RFNet's dataset; only ``generated_image`` and ``label`` are read)."""
    model = ResNetOnly(seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    take = len(train) // batch_size * batch_size
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 if epoch >= (epochs + 1) // 2 else 1.0)
        order = epoch_order(len(train), seed, epoch, 0, 1, take)
        loader = torch.utils.data.DataLoader(train, batch_size=batch_size, sampler=order)
        for batch in loader:
            loss = F.cross_entropy(model(batch["generated_image"]), batch["label"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval()


@torch.no_grad()
def predict_resnet_only(model: ResNetOnly, dataset: RFNetDataset, batch_size: int = 64):
    """(probabilities float [N, 5], labels int64 [N])."""
    probabilities, labels = [], []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        probabilities.append(model(batch["generated_image"]).softmax(-1))
        labels.append(batch["label"])
    return torch.cat(probabilities), torch.cat(labels)
