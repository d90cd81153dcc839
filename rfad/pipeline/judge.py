"""RFNet as the loop's judge, over any runner's ``depth``, ``saliency``, ``rfnet_text`` and ``rfnet``.

Per request, ``prepare`` encodes the caption once (``rfnet_text`` -> e_c) and keeps the product
image; per attempt, the candidates are judged as one batch: depth and saliency maps of every
generated image, then RFNet over (I_o, I_g, I_d, I_s, e_c). Images are resized to the judge's
working size first (:mod:`rfad.pipeline.judge_view`), as the ``rfad_judge`` endpoint does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rfad.canvas import AdCanvas
from rfad.pipeline.tokens import tokenize_caption
from rfad.pipeline.judge_view import resize_tensor
from rfad.pipeline.request import image_to_tensor
from rfad.pipeline.runner import ComponentRunner


@dataclass
class JudgeState:
    """Per-request judge constants: product image [1, 3, S, S] in [0, 1] (S: the judge's size), caption
    embeddings [1, L, d] and mask [1, L]."""

    product_image: torch.Tensor
    caption_embeddings: torch.Tensor
    caption_mask: torch.Tensor


class RunnerJudge:
    """The ``Judge`` of :func:`rfad.pipeline.generate.generate`, backed by a runner's judge components.

    ``screen=True``: early screening's own RFNet (``screen_rfnet_text``, ``screen_rfnet``) judges,
    beside the same depth and saliency models (the ``screen_judge`` of ``generate``).
    """

    def __init__(self, runner: ComponentRunner, screen: bool = False):
        if runner.info.caption_tokenizer is None or runner.info.judge_size is None:
            raise ValueError("this runner has no judge models (RFNet, depth, saliency): pass --rfnet/--depth/--saliency")
        if screen and not runner.info.screen_judge:
            raise ValueError("this runner has no screening RFNet: give the model set a screen_rfnet, or screen with "
                             "the judge's RFNet")
        self.runner = runner
        self.encode_caption = runner.screen_rfnet_text if screen else runner.rfnet_text
        self.rfnet = runner.screen_rfnet if screen else runner.rfnet

    def prepare(self, canvas: AdCanvas, caption: str) -> JudgeState:
        runner = self.runner
        ids, mask = tokenize_caption(runner.info.caption_tokenizer, caption)
        ids, mask = ids.to(runner.device), mask.to(runner.device)
        product = image_to_tensor(canvas.init_image, runner.device, runner.dtype, signed=False)
        return JudgeState(
            product_image=resize_tensor(product, runner.info.judge_size),
            caption_embeddings=self.encode_caption(ids, mask),
            caption_mask=mask,
        )

    def __call__(self, images: np.ndarray, state: JudgeState) -> np.ndarray:
        """uint8 [N, H, W, 3] -> class probabilities float [N, 5]."""
        runner = self.runner
        n = images.shape[0]
        generated = resize_tensor(torch.cat([image_to_tensor(image, runner.device, runner.dtype, signed=False)
                                             for image in images]), runner.info.judge_size)
        with torch.no_grad():
            depth = runner.depth(generated)
            saliency = runner.saliency(generated)
            probabilities = self.rfnet(
                state.product_image.expand(n, -1, -1, -1), generated, depth, saliency,
                state.caption_embeddings.expand(n, -1, -1), state.caption_mask.expand(n, -1),
            )
        return probabilities.float().cpu().numpy()
