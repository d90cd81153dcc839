"""The ResNet-only baseline of the paper's judge table: a ResNet that sees the generated image alone.

The paper compares RFNet (AP 87.58) with an ImageNet-pretrained ResNet-50 classifier of the
generated image (AP 77.29). Here the ResNet is RFNet's own image backbone (the recipe's
``tiny_rfnet_config(backbone).resnet``: equal backbone capacity) with transformers' classification
head, trained as the RFNet judges are: first on the VAE-decoded scenes the oracle labelled (the
miniature world's stand-in for ImageNet, once), then on RF-mini per seed, each with AdamW,
cross-entropy over the five classes and lr x0.1 from the middle epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rfad.contract import CLASS_NAMES
from rfad.models.rfnet import IMAGENET_MEAN, IMAGENET_STD, tiny_rfnet_config
from rfad.trainer.api import epoch_order, load_split_rows, resolve_path


class ImageRows(torch.utils.data.Dataset):
    """Labelled manifest rows -> (generated image float [3, S, S] in [0, 1], class index), decoded once."""

    def __init__(self, data: str | Path, split: str, size: int):
        rows, root = load_split_rows(data, split, lambda *_: None)
        self.ids = [row.id for row in rows]
        self.labels = [CLASS_NAMES.index(row.label) for row in rows]
        # np.array, not np.asarray: a PIL image's buffer is read-only, and torch warns on wrapping one.
        self.images = [np.array(Image.open(resolve_path(root, row.generated)).convert("RGB")
                                .resize((size, size), Image.BILINEAR), dtype=np.uint8) for row in rows]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 255.0
        return image, torch.tensor(self.labels[index])


class ResNetOnly(torch.nn.Module):
    """generated image float [B, 3, S, S] in [0, 1] -> logits [B, 5]."""

    def __init__(self, backbone: str, seed: int):
        super().__init__()
        from transformers import ResNetConfig, ResNetForImageClassification

        torch.manual_seed(seed)
        config = ResNetConfig.from_dict({**tiny_rfnet_config(backbone).resnet, "num_labels": len(CLASS_NAMES)})
        self.resnet = ResNetForImageClassification(config)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, generated_image: torch.Tensor) -> torch.Tensor:
        return self.resnet(pixel_values=(generated_image - self.mean) / self.std).logits


def train_resnet_only(model: ResNetOnly, train: ImageRows, epochs: int, batch_size: int, lr: float, seed: int,
                      weight_decay: float = 0.01) -> ResNetOnly:
    """Train ``model`` on ``train`` for ``epochs`` (a fresh AdamW, lr x0.1 from the middle epoch)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    take = len(train) // batch_size * batch_size
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 if epoch >= (epochs + 1) // 2 else 1.0)
        order = epoch_order(len(train), seed, epoch, 0, 1, take)
        for images, labels in torch.utils.data.DataLoader(train, batch_size=batch_size, sampler=order):
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval()


@torch.no_grad()
def predict_resnet_only(model: ResNetOnly, dataset: ImageRows, batch_size: int = 64) -> dict[str, list[float]]:
    """Row id -> class probabilities (CLASS_NAMES order)."""
    probabilities = []
    for images, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        probabilities.append(model(images).softmax(-1))
    return dict(zip(dataset.ids, torch.cat(probabilities).tolist()))


def pretrain_resnet_only(scenes: Path, out: Path, recipe) -> None:
    """The baseline's pretraining on ``scenes`` (its train split), once: weights to ``out`` (safetensors)."""
    from safetensors.torch import save_file

    if out.is_file():
        return
    model = train_resnet_only(ResNetOnly(recipe.backbone, 0), ImageRows(scenes, "train", recipe.image_size),
                              recipe.pretrain_epochs, recipe.batch_size, recipe.lr, 0)
    partial = out.with_name(out.name + ".partial")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
    partial.replace(out)


def resnet_only_scores(work: Path, data: Path, recipe, seed: int) -> dict[str, dict[str, list[float]]]:
    """The baseline fine-tuned on ``data``'s train split from the pretrained weights with ``seed``:
    ``{"val": {id: probabilities}, "test": {...}}``."""
    from safetensors.torch import load_file

    model = ResNetOnly(recipe.backbone, seed)
    model.load_state_dict(load_file(str(work / "pretrained-resnet.safetensors")))
    model = train_resnet_only(model, ImageRows(data, "train", recipe.image_size), recipe.epochs, recipe.batch_size,
                              recipe.lr, seed)
    return {split: predict_resnet_only(model, ImageRows(data, split, recipe.image_size)) for split in ("val", "test")}
