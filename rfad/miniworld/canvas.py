"""The miniature world's canvas: where its generator was trained to place a product.

128 px square; the product's largest side at half the canvas (room under it for a table and beside
it for a reference object), enlarged when smaller, centred; the generate-mask dilated by 5 px, the
production 20 px at 512 scaled to 128. The scenes the generator learns from
(:mod:`rfad.trainer.data.scenes`), RF-mini, the shipped model set's ``rfad-models.json`` and the
studies of the method all place products by it.
"""

from __future__ import annotations

from rfad.canvas import CanvasSpec

MINIWORLD_SIDE = 128
MINIWORLD_CANVAS = CanvasSpec(width=MINIWORLD_SIDE, height=MINIWORLD_SIDE, product_scale=0.5, upscale=True,
                              mask_dilation=5)
