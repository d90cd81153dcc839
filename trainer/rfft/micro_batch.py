"""The constant inputs of one RFFT micro-step (:class:`MicroBatch`), prepared without gradient:
canvases, per-request constants, the rows' initial DDIM draws and the caption embeddings e_c."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rfad.canvas import AdCanvas, CanvasSpec, prepare_canvas
from rfad.pipeline.tokens import tokenize_caption
from rfad.pipeline.denoise import DenoisingBatch, merge_batches, start_denoising
from rfad.pipeline.request import image_to_tensor, prepare_request
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.trainer.data.manifest import ManifestRow, resolve_path


@dataclass
class MicroBatch:
    """The constant inputs of one micro-step of B rows (on the runner's device).

    denoising: the B candidates' DDIM state (one candidate per row, merged).
    product_image: float [B, 3, H, W] in [0, 1], the product on the canvas (RFNet's I_o).
    product_rgb: float [B, 3, H, W] in [0, 1], the product's colours (0 off the product).
    product_alpha: float [B, 1, H, W] in [0, 1], the undilated alpha used to paste the product back.
    caption_embeddings: float [B, L, d] (RFNet's e_c); caption_mask: int64 [B, L].
    """

    canvases: list[AdCanvas]
    denoising: DenoisingBatch
    product_image: torch.Tensor
    product_rgb: torch.Tensor
    product_alpha: torch.Tensor
    caption_embeddings: torch.Tensor
    caption_mask: torch.Tensor


@torch.no_grad()
def prepare_micro_batch(runner: TorchRunner, rows: list[ManifestRow], root: Path, spec: CanvasSpec,
                        settings: GenerationSettings, seeds: list[int], negative_prompt: str = "") -> MicroBatch:
    """Canvases, per-request constants (``prepare_request``), initial draws and e_c for ``rows``."""
    device = runner.device
    canvases, batches, products, colours, alphas = [], [], [], [], []
    for row, seed in zip(rows, seeds):
        canvas = prepare_canvas(resolve_path(root, row.product), spec)
        prepared = prepare_request(runner, canvas, row.prompt, negative_prompt)
        canvases.append(canvas)
        batches.append(start_denoising(runner, prepared, [seed], settings))
        products.append(image_to_tensor(canvas.init_image, device, torch.float32, signed=False))
        colours.append(image_to_tensor(canvas.product_rgb, device, torch.float32, signed=False))
        alphas.append(image_to_tensor(canvas.product_alpha[..., None], device, torch.float32, signed=False))
    # The tokenizer pads every caption to its model_max_length, so the rows stack.
    tokens = [tokenize_caption(runner.info.caption_tokenizer, row.caption) for row in rows]
    ids = torch.cat([t[0] for t in tokens]).to(device)
    mask = torch.cat([t[1] for t in tokens]).to(device)
    return MicroBatch(canvases=canvases, denoising=merge_batches(batches), product_image=torch.cat(products),
                      product_rgb=torch.cat(colours), product_alpha=torch.cat(alphas),
                      caption_embeddings=runner.rfnet_text(ids, mask), caption_mask=mask)
