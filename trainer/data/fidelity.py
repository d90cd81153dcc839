"""Prompt fidelity: does a miniature-world image show what its prompt names?

A miniature-world prompt names the scene's wall colour, its table (or its shelf, or neither) and
optionally a reference object (:func:`rfad.trainer.data.scenes._prompt`). A fine-tuned generator
that learnt to paint one safe background for every request can keep its judge happy and still
stop following the prompt; this module reads the named attributes back from the image, the way
the oracle reads its defects (measured colour and geometry, numpy and OpenCV only):

- wall: the median colour of the wall rows (above the product, beside it) is nearest to the named
  wall's colour, as drawn under the named light, among every wall the world can name;
- table: the median colour of the bottom rows beside the product is nearest to the named table's
  colour among every table the world can name and the named wall itself (a scene with no table);
- reference: the oracle measures an object beside the product (at any depth: a floating product's
  reference stands on the table, below it) if and only if the prompt names one. A prompt names
  every object of its scene, so stray objects where none was asked for are not what it names.

The wall and the reference are always read; the table when the prompt names one (None
otherwise). An image is faithful when everything read matches. On drawn scenes 97 % are
(tests/test_prompt_fidelity.py); on a scene given another scene's prompt, almost none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rfad.miniworld.oracle import label_ad
from rfad.trainer.data.scenes import LIGHTS, TABLES, WALLS, lit
from rfad.trainer.data.synth import COLOURS, shade

ATTRIBUTES = ("wall", "table", "reference")
WALL_ROWS = 0.6      # the wall is read on rows [0, WALL_ROWS x the product's top row): clear of the table line
TABLE_ROWS = 0.05    # the table is read on the bottom rows (x H): a drawn table always reaches the frame's bottom
BESIDE = 0.15        # columns within this fraction of H of the product's span are skipped (its shadow, its parts)

_PROMPT = re.compile(r"^an? (?P<noun>.+?)(?: on an? (?P<table>.+?))? in front of an? (?P<wall>.+?) wall"
                     r"(?: with an? (?P<shelf>.+?) shelf)?, (?P<light>[^,]+)(?:, beside an? (?P<reference>[^,]+))?, ")


@dataclass(frozen=True)
class PromptNames:
    """What a miniature-world prompt names: the wall, the table (None: none named), the light, the reference."""

    wall: str
    table: str | None
    light: str
    reference: str | None


def parse_prompt(prompt: str) -> PromptNames:
    """The attributes named by a miniature-world ``prompt``; ValueError when it is not one."""
    match = _PROMPT.match(prompt)
    if match is None or match["light"] not in LIGHTS or match["wall"] not in {**WALLS, **COLOURS}:
        raise ValueError(f"prompt: not a miniature-world prompt (wall, table, light, reference): {prompt!r}")
    return PromptNames(wall=match["wall"], table=match["table"], light=match["light"], reference=match["reference"])


def _wall_colours(light: str) -> dict[str, np.ndarray]:
    """Every wall the world can name, as drawn under ``light``: the palette's walls lit, a product
    colour's wall (Indistinctiveness) as the product's colour itself."""
    colours = {name: np.asarray(rgb, np.float32) for name, rgb in COLOURS.items()}
    colours.update({name: np.asarray(lit(rgb, light), np.float32) for name, rgb in WALLS.items()})
    return colours


def _table_colours(light: str) -> dict[str, np.ndarray]:
    """Every table the world can name under ``light``: the palette's, and a product colour's table
    (the wall's own colour, a shade darker)."""
    colours = {f"{name} table": np.asarray(shade(rgb, 0.88), np.float32) for name, rgb in COLOURS.items()}
    colours.update({name: np.asarray(lit(rgb, light), np.float32) for name, (_, rgb) in TABLES.items()})
    return colours


def _nearest(measured: np.ndarray, candidates: dict[str, np.ndarray]) -> str:
    return min(candidates, key=lambda name: float(np.linalg.norm(candidates[name] - measured)))


def read_fidelity(image: np.ndarray, product: np.ndarray, placement: np.ndarray, prompt: str) -> dict:
    """Which of ``prompt``'s named attributes ``image`` shows.

    ``image`` uint8 [H, W, 3] (the ad, product pasted back), ``product`` uint8 [h, w, 4] (the cut-out),
    ``placement`` uint8 [H, W] (its alpha on the canvas), as :func:`rfad.miniworld.oracle.label_ad` takes
    them. Returns {"wall": bool, "table": bool | None, "reference": bool, "faithful": bool,
    "wall_read": name, "table_read": name | None}; table None: the prompt names no table.
    """
    names = parse_prompt(prompt)
    verdict = label_ad(image, product, placement)  # validates the arrays, measures the reference objects
    height, width = placement.shape
    solid = placement > 127
    rows, columns = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    margin = int(round(BESIDE * height))
    beside = np.ones(width, bool)
    beside[max(0, columns[0] - margin):columns[-1] + margin + 1] = False
    if not beside.any():  # a product spanning the frame: read the whole rows
        beside[:] = True
    pixels = image.astype(np.float32)

    gradient = LIGHTS[names.light][2]
    wall_bottom = max(1, int(WALL_ROWS * rows[0]))
    # The drawn wall is lighter at the top by (1 + gradient (0.5 - row / base)) (scenes._backdrop).
    lighter = 1 + gradient * (0.5 - (wall_bottom / 2) / max(int(rows[-1]), 1))
    walls = {name: rgb * lighter for name, rgb in _wall_colours(names.light).items()}
    wall_measured = np.median(pixels[:wall_bottom][:, beside].reshape(-1, 3), axis=0)
    wall_read = _nearest(wall_measured, walls)
    out = {"wall": wall_read == names.wall, "wall_read": wall_read, "table": None, "table_read": None,
           "reference": bool(verdict.measurements["objects_beside"]) == (names.reference is not None)}
    if names.table is not None:
        # The drawn table darkens towards the bottom (by 10 % at the last row, 9 % over the rows
        # read); a scene without a table shows the wall there, darker than at the top by the gradient.
        tables = {name: rgb * 0.91 for name, rgb in _table_colours(names.light).items()}
        tables[None] = walls[names.wall] / lighter * (1 - gradient / 2)
        bottom = max(1, int(round(TABLE_ROWS * height)))
        table_measured = np.median(pixels[height - bottom:][:, beside].reshape(-1, 3), axis=0)
        out["table_read"] = _nearest(table_measured, tables)
        out["table"] = out["table_read"] == names.table
    out["faithful"] = all(out[name] is not False for name in ATTRIBUTES)
    return out
