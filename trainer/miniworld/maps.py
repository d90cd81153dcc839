"""``rfad-train maps``: the miniature world's depth and saliency models, trained on the drawn scenes' own truth.

RFNet reads a depth map (DPT) and a saliency map (U2-Net) of every generated image. At this size
no pretrained map model exists, and random-weight ones give maps that carry no learned signal
(two of the judge's five inputs). The drawn scenes know both maps exactly:

- saliency: the product's silhouette where the canvas placed it (the paper's salient object);
- depth: the layout (:meth:`rfad.trainer.data.scenes.Scene.depth`): the wall far, the table nearer
  row by row, every object at the depth of the row it stands on; scaled to [0, 1] per image, as the
  served depth map is (relative depth, as DPT's is).

One loop, top to bottom: config -> scenes (drawn, seeded, passed through the generator's VAE and
the product pasted back, so the inputs look like what the generator paints) -> a DPT and a U2-Net
of the tiny zoo's shapes at the maps' working size -> AdamW on L1 to both targets through the
components' own wrappers (``DepthEstimator``, ``SaliencyEstimator``: the resize and per-image
normalisation serving uses) -> held-out check (saliency IoU at 0.5, depth L1) -> the two model
folders and ``training_record.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Scenes of the maps' training and check: streams that the generator's training, RF-mini's requests
# and the VAE check never use.
MAP_STREAM, MAP_CHECK_STREAM = 3, 4


@dataclass
class MapsTrainConfig:
    out: str
    scenes: int = 3000
    steps: int = 1500
    batch: int = 16
    lr: float = 1e-3
    size: int = 128          # the maps' working size (the miniature world's canvas)
    check: int = 200         # held-out scenes of the check
    seed: int = 0
    models: str | None = None  # the generator whose VAE decodes the scenes [default: the shipped one]

    def __post_init__(self) -> None:
        for name in ("scenes", "steps", "batch", "check"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: must be at least 1, got {getattr(self, name)}")
        if self.size % 8:
            raise ValueError(f"--size {self.size}: must be a multiple of 8 (DPT's patches)")


def decoded_scenes(runner, count: int, seed: int, stream: int, batch: int = 32, progress=None):
    """``count`` scenes of the standard class mix, decoded by the generator's VAE with the product pasted
    back: (inputs uint8 [N, H, W, 3], saliency float32 [N, H, W], depth float32 [N, H, W])."""
    from rfad.canvas import paste_back
    from rfad.contract import CLASS_NAMES
    from rfad.trainer.data.oracle_generated import vae_round_trip
    from rfad.trainer.data.scenes import draw_scene

    inputs, saliency, depth = [], [], []
    for start in range(0, count, batch):
        scenes = [draw_scene(CLASS_NAMES[i % len(CLASS_NAMES)], np.random.default_rng([seed, stream, i]))
                  for i in range(start, min(count, start + batch))]
        decoded = vae_round_trip(runner, np.stack([scene.image for scene in scenes]))
        for image, scene in zip(decoded, scenes):
            inputs.append(paste_back(image, scene.canvas))
            saliency.append((scene.canvas.product_alpha > 127).astype(np.float32))
            depth.append(_min_max(scene.depth()))
        if progress is not None:
            progress(len(inputs), count)
    return np.stack(inputs), np.stack(saliency), np.stack(depth)


def _min_max(depth: np.ndarray) -> np.ndarray:
    """The layout's depth scaled to [0, 1] per image (flat: 0), as the served ``DepthEstimator`` scales its output:
    a scene without a table has its nearest point at 0.2, which a min-max-scaled prediction can never equal."""
    low, high = float(depth.min()), float(depth.max())
    return ((depth - low) / (high - low) if high > low else np.zeros_like(depth)).astype(np.float32)


def build_map_models(size: int, seed: int):
    """(DepthEstimator over a DPT, SaliencyEstimator over a U2-Net): the tiny zoo's shapes, working at
    ``size`` px, freshly initialised from ``seed``."""
    from transformers import DPTConfig, DPTForDepthEstimation

    from rfad.models.maps import DepthEstimator, SaliencyEstimator
    from rfad.models.u2net import U2Net
    from rfad.models.u2net_config import U2NetConfig
    from rfad.tiny.shapes import SHAPES

    torch.manual_seed(seed)
    tiny = SHAPES["tiny"]
    # The tiny shape's initialisation (std 0.1): at DPT's default 0.02 the head's last ReLU outputs 0
    # everywhere, no gradient reaches it, and the model stays a flat map (the first shipped one did).
    dpt = DPTForDepthEstimation(DPTConfig(**{**tiny.dpt, "image_size": size}))
    u2net = U2Net(U2NetConfig(**tiny.u2net, input_size=size))
    return DepthEstimator(dpt, size=size), SaliencyEstimator(u2net, size=size)


def _tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def check_maps(depth_model, saliency_model, data, batch: int = 32) -> dict:
    """Held-out quality: saliency IoU (map >= 0.5 vs the silhouette) and mean |depth - truth|."""
    inputs, saliency, depth = data
    depth_model.eval(), saliency_model.eval()
    intersection = union = 0.0
    errors = []
    for start in range(0, len(inputs), batch):
        x = _tensor(inputs[start:start + batch])
        predicted = saliency_model(x)[:, 0].numpy() >= 0.5
        truth = saliency[start:start + batch] >= 0.5
        intersection += float((predicted & truth).sum())
        union += float((predicted | truth).sum())
        errors.append(np.abs(depth_model(x)[:, 0].numpy() - depth[start:start + batch]).mean(axis=(1, 2)))
    return {"saliency_iou": round(intersection / max(union, 1.0), 4),
            "depth_l1": round(float(np.concatenate(errors).mean()), 4), "scenes": len(inputs)}


def train_maps(config: MapsTrainConfig, echo=print) -> Path:
    """Train both map models and write ``config.out/dpt``, ``config.out/u2net`` and the record; returns out."""
    from transformers import DPTImageProcessor

    from rfad.logs import quiet_third_party
    from rfad.miniworld import RECORD_FILE, file_hashes
    from rfad.trainer.data.miniworld import load_generator

    quiet_third_party()
    started, out = time.perf_counter(), Path(config.out)
    runner, generator = load_generator(config.models)
    echo(f"decoding {config.scenes} + {config.check} scenes through {generator}'s VAE")
    train = decoded_scenes(runner, config.scenes, config.seed, MAP_STREAM)
    held_out = decoded_scenes(runner, config.check, config.seed, MAP_CHECK_STREAM)
    decode_seconds = time.perf_counter() - started
    depth_model, saliency_model = build_map_models(config.size, config.seed)
    before = check_maps(depth_model, saliency_model, held_out)
    parameters = list(depth_model.parameters()) + list(saliency_model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    rng = np.random.default_rng([config.seed, 1])
    curve, start = [], time.perf_counter()
    for step in range(1, config.steps + 1):
        depth_model.train(), saliency_model.train()
        picks = rng.integers(len(train[0]), size=config.batch)
        flip = rng.random() < 0.5  # the layouts are left-right symmetric
        images, saliency, depth = (a[picks][:, :, ::-1] if flip else a[picks] for a in train)
        x = _tensor(images)
        # On the unscaled output: the truth is in [0, 1] per image, so the model learns the scale too and
        # the served per-image scaling is nearly the identity (a loss on the scaled map cannot see the scale).
        depth_loss = F.l1_loss(depth_model.unscaled(x)[:, 0], torch.from_numpy(np.ascontiguousarray(depth)))
        saliency_loss = F.l1_loss(saliency_model(x)[:, 0], torch.from_numpy(np.ascontiguousarray(saliency)))
        optimizer.zero_grad(set_to_none=True)
        (depth_loss + saliency_loss).backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == config.steps:
            curve.append({"step": step, "depth_l1": round(depth_loss.item(), 5),
                          "saliency_l1": round(saliency_loss.item(), 5)})
            echo(f"step {step}/{config.steps}: depth L1 {depth_loss.item():.4f}, saliency L1 {saliency_loss.item():.4f}")
    after = check_maps(depth_model, saliency_model, held_out)
    echo(f"held-out check: {after} (untrained: {before})")

    out.mkdir(parents=True, exist_ok=True)
    depth_model.dpt.save_pretrained(out / "dpt", safe_serialization=True)
    DPTImageProcessor(size={"height": config.size, "width": config.size}).save_pretrained(out / "dpt")
    saliency_model.u2net.save_pretrained(out / "u2net")
    record = {"command": "rfad-train maps", "config": asdict(config), "generator": str(generator),
              "check": {"untrained": before, "trained": after}, "curve": curve,
              "seconds": {"decode": round(decode_seconds, 1), "train": round(time.perf_counter() - start, 1)},
              "truth": __doc__.split("One loop")[0].strip()}
    record["files"] = file_hashes(out)
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out
