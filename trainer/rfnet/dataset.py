"""RFNet training samples from a manifest: (I_o, I_g, I_d, I_s, caption tokens, label).

I_o is the product as the serving loop shows it to RFNet: the cut-out placed on the ad canvas
(``prepare_canvas(...).init_image``), so training and serving inputs match. I_d and I_s come
from the manifest's cached maps (``rfad-data prepare``) or, when a row has none, from the map
models given to the dataset, computed in batches when the dataset is made and kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.contract import CLASS_NAMES
from rfad.trainer.data.manifest import ManifestRow, resolve_path


@dataclass
class MapModels:
    """Depth and saliency models for rows without cached maps ([0,1] images -> [0,1] maps)."""

    depth: torch.nn.Module
    saliency: torch.nn.Module

    @torch.no_grad()
    def __call__(self, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """generated float [N, 3, S, S] in [0, 1] -> (depth [N, 1, S, S], saliency [N, 1, S, S])."""
        return self.depth(generated), self.saliency(generated)


def _to_tensor(image: Image.Image, size: int, mode: str) -> torch.Tensor:
    image = image.convert(mode).resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


class RFNetDataset(torch.utils.data.Dataset):
    """Rows already checked by ``check_rows`` (bad rows never get here).

    Items: dict of product_image, generated_image [3, S, S], depth_map, saliency_map [1, S, S]
    (float in [0, 1]), input_ids, attention_mask [L] (int64) and label (int64; -1 if unlabeled).
    """

    def __init__(self, rows: list[ManifestRow], root: str | Path, tokenizer, image_size: int,
                 max_caption_tokens: int, maps: MapModels | None = None,
                 product_scale: float = CanvasSpec.product_scale):
        self.rows = rows
        self.product_scale = product_scale
        self.root = Path(root)
        self.tokenizer = tokenizer
        self.size = image_size
        self.max_tokens = max_caption_tokens
        self.maps = maps
        self._map_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # row id -> uint8 [1, S, S] maps
        # Decoded images (and placed products) kept across epochs while they fit CACHE_BYTES: decoding
        # PNGs and placing products cost as much as the tiny judges' steps. The cache holds what a read
        # returns, so results are the same with it or without it.
        self._decoded: dict[tuple[str, str], Image.Image] = {}
        self._cached_bytes = 0
        missing = [row for row in rows if (row.depth is None or row.saliency is None)]
        if missing and maps is None:
            raise ValueError(f"{len(missing)} rows have no cached depth/saliency maps (e.g. {missing[0].id!r}): run "
                             "`rfad-data prepare` first, or pass --depth and --saliency models")
        self._compute_maps(missing)

    CACHE_BYTES = 1 << 30
    # Rows whose maps one call of the map models computes: one image per call had cost the tiny
    # judge's training on 600 uncached rows half its time (28 s of 51 s, 2 cores; 36 s in all at 8,
    # 34 s at 32). 8 keeps DPT-Large's and U2-Net's activations at their published sizes small.
    MAP_BATCH = 8

    def _generated(self, row: ManifestRow) -> torch.Tensor:
        """I_g, float [3, S, S] in [0, 1]."""
        return _to_tensor(self._kept(("generated", row.generated),
                                     lambda: Image.open(resolve_path(self.root, row.generated))), self.size, "RGB")

    def _compute_maps(self, rows: list[ManifestRow]) -> None:
        """Depth and saliency of ``rows`` (those without cached maps) into the map cache, in batches."""
        from tqdm import tqdm

        pending = list({row.id: row for row in rows}.values())
        # A bar where a person watches (tqdm's disable=None: not in logs or tests): with the published
        # DPT-Large and U2-Net on CPU, an uncached set of thousands of rows takes minutes here.
        for start in tqdm(range(0, len(pending), self.MAP_BATCH), desc="depth and saliency maps", unit="batch",
                          disable=None):
            chunk = pending[start:start + self.MAP_BATCH]
            depth, saliency = self.maps(torch.stack([self._generated(row) for row in chunk]))
            for row, d, s in zip(chunk, depth, saliency):
                # Kept as uint8, quantised exactly like the PNGs of `rfad-data prepare`: a quarter of the
                # memory, and the model sees the same precision whichever way the maps were made.
                self._map_cache[row.id] = tuple((m.clamp(0, 1) * 255.0).round().to(torch.uint8) for m in (d, s))

    def __len__(self) -> int:
        return len(self.rows)

    def _kept(self, key: tuple[str, str], read) -> Image.Image:
        """``read()``'s image, decoded once while the cache has room."""
        image = self._decoded.get(key)
        if image is None:
            image = read()
            image.load()
            size = len(image.getbands()) * image.width * image.height
            if self._cached_bytes + size <= self.CACHE_BYTES:
                self._decoded[key] = image
                self._cached_bytes += size
        return image

    def _product(self, row: ManifestRow) -> torch.Tensor:
        # The canvas is at least 64 px; the product fills product_scale of it, enlarged if small,
        # as the served judge places I_o on the deployment's canvas (rfad_judge_prepare) whatever
        # the product's resolution. Train at the scale the deployment serves: the model set's
        # declared product_scale (the miniature world's 0.5), else the default 0.75.
        side = max(64, (self.size + 7) // 8 * 8)
        spec = CanvasSpec(width=side, height=side, product_scale=self.product_scale, upscale=True, min_side=1)
        placed = self._kept(("product", row.product), lambda: Image.fromarray(
            prepare_canvas(resolve_path(self.root, row.product), spec).init_image))
        return _to_tensor(placed, self.size, "RGB")

    def _maps(self, row: ManifestRow) -> tuple[torch.Tensor, torch.Tensor]:
        if row.depth is not None and row.saliency is not None:
            return tuple(_to_tensor(self._kept((kind, path), lambda p=path: Image.open(resolve_path(self.root, p))),
                                    self.size, "L")
                         for kind, path in (("depth", row.depth), ("saliency", row.saliency)))
        depth, saliency = self._map_cache[row.id]
        return depth.float() / 255.0, saliency.float() / 255.0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        generated = self._generated(row)
        depth, saliency = self._maps(row)
        tokens = self.tokenizer(row.caption, padding="max_length", max_length=self.max_tokens, truncation=True,
                                return_tensors="pt")
        return {
            "product_image": self._product(row),
            "generated_image": generated,
            "depth_map": depth,
            "saliency_map": saliency,
            "input_ids": tokens.input_ids[0],
            "attention_mask": tokens.attention_mask[0],
            "label": torch.tensor(CLASS_NAMES.index(row.label) if row.label is not None else -1),
        }


MODEL_INPUTS = ("product_image", "generated_image", "depth_map", "saliency_map", "input_ids", "attention_mask")
