"""Miniature-world scenes: a product placed by the canvas, a drawn background, a label known by construction.

RF-mini's generator paints only the background: the canvas places the product at a fixed scale,
centred (:data:`MINIWORLD_CANVAS`), and pastes it back exactly. So every class here is a
property of the BACKGROUND around a correctly placed product, drawn in the form the generator
is trained on and will produce (128 px: the smallest size at which the oracle's rules hold with
margin; its VAE's latent is 16 x 16):

| label               | how the background is drawn |
|---------------------|-----------------------------|
| Available           | a wall, a table whose back-edge line runs 0-6 % H above the product's base, a soft shadow, optionally a reference object 0.4-1.0x the product's height beside it |
| Space Mismatch      | one of: the table line 12-20 % H below the base (the product floats); no table at all; only a wall shelf far above the base |
| Size Mismatch       | as Available, with a reference object 0.12-0.2x or 1.6-2.2x the product's height beside it |
| Indistinctiveness   | as Available, with the wall (and half the time the table) in the product's own colour |
| Shape Hallucination | as Available, with a product-coloured part attached to the outline: a bulge, a horn, a handle, or a stand under the base |

Walls, tables and references otherwise keep far from the product's colour (so that no other rule
fires), and the prompt names what is drawn (wall colour, table material, light, reference)
but never the defect: a floating product's prompt still says "on a walnut table". Products
and captions are those of the synthetic set (:mod:`rfad.trainer.data.synth`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from rfad.canvas import AdCanvas, paste_back, prepare_canvas
from rfad.contract import CLASS_NAMES
from rfad.miniworld.canvas import MINIWORLD_CANVAS, MINIWORLD_SIDE
from rfad.trainer.data.synth import COLOURS, STYLES, DrawnSample, draw_product, sample_product, shade, tint, \
    write_drawn_dataset

AVAILABLE, SPACE, SIZE, INDISTINCT, HALLUCINATION = CLASS_NAMES
SIDE = MINIWORLD_SIDE

WALLS = {
    "white": (240, 240, 235), "cream": (238, 226, 196), "beige": (214, 198, 170), "light grey": (196, 196, 196),
    "grey": (135, 135, 140), "charcoal": (58, 58, 64), "sage green": (158, 184, 148), "light blue": (168, 198, 230),
    "navy": (34, 44, 92), "blush pink": (236, 190, 198), "terracotta": (188, 98, 68), "mint": (188, 230, 208),
}
TABLES = {  # what the prompt calls it -> (material, the shelf's prompt word; colour)
    "light oak table": ("light oak", (206, 170, 118)), "walnut table": ("walnut", (104, 66, 42)),
    "white marble counter": ("white marble", (228, 228, 224)), "black desk": ("black", (38, 38, 42)),
    "concrete floor": ("concrete", (150, 150, 146)), "linen tablecloth": ("linen", (222, 212, 190)),
    "white table": ("white", (246, 246, 244)), "slate counter": ("slate", (84, 92, 100)),
}
LIGHTS = {  # name -> (brightness, per-channel tint, wall gradient: top lighter than the line by this fraction)
    "soft studio light": (1.0, (1.0, 1.0, 1.0), 0.10), "warm evening light": (0.95, (1.06, 1.0, 0.88), 0.06),
    "cool morning light": (1.0, (0.92, 0.98, 1.06), 0.06), "dim light": (0.8, (1.0, 1.0, 1.0), 0.04),
    "bright daylight": (1.06, (1.0, 1.0, 1.0), 0.08),
}
REFERENCES = ("potted plant", "stack of books", "vase")
REFERENCE_COLOURS = tuple(COLOURS.values()) + ((236, 236, 230), (128, 128, 128), (222, 200, 150))
VARIANTS = {
    AVAILABLE: ("standing",),
    SPACE: ("floating", "no support", "shelf only"),
    SIZE: ("reference too large", "reference too small"),
    INDISTINCT: ("wall matches", "wall and table match"),
    HALLUCINATION: ("bulge", "horn", "handle", "stand"),
}

# Margins (RGB distance) that keep every class away from the oracle's thresholds.
FAR = 120.0               # wall and table vs the product
LINE_FAR = 70.0           # table line vs the product
VISIBLE = 45.0            # table vs wall, reference vs wall and table: the edge is seen
REFERENCE_FAR = 110.0     # reference object vs the product
MATCH_JITTER = 12         # Indistinctiveness: per-channel offset of the wall from the product's colour
LINE_ABOVE_BASE = (0.0, 0.06)        # x H: the table's back edge behind a standing product
FLOAT_GAP = (0.12, 0.20)             # x H: Space Mismatch, table line below the base
SHELF_ABOVE_BASE = (0.35, 0.45)      # x H: Space Mismatch, the shelf's top edge above the base
SCALES = {"plausible": (0.4, 1.0), "reference too small": (0.12, 0.2), "reference too large": (1.6, 2.2)}
REFERENCE_WIDTH = (5, 22)            # px: narrow enough to leave each row mostly background
SHADOW_DARKENING = 0.07
# Seed streams (the second entry of every per-scene seed): the generator's training scenes, the
# products RF-mini generates for and the scenes that check the generator's VAE never share a
# generator state, so RF-mini's products are held out.
TRAINING_STREAM, REQUEST_STREAM, CHECK_STREAM = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Scene:
    """One scene: the ad as generation would return it (background painted, product pasted back)."""

    label: str
    product: Image.Image    # RGBA cut-out, what prepare_canvas receives
    canvas: AdCanvas        # the product placed by MINIWORLD_CANVAS
    image: np.ndarray       # uint8 [128, 128, 3]
    prompt: str
    caption: str
    params: dict            # how the background was drawn (JSON-ready)
    part_mask: np.ndarray | None = None       # bool [128, 128]: a part attached to the product (Shape Hallucination)
    reference_mask: np.ndarray | None = None  # bool [128, 128]: the reference object, if any

    def depth(self) -> np.ndarray:
        """float32 [128, 128] in [0, 1], near = 1: the layout's depth (the miniature world's ground truth for
        depth models). The wall is farthest (0); the table comes nearer row by row from its back edge (0.4)
        to the frame's bottom (1); a shelf stands just off the wall (0.2); the product, its parts and the
        reference object take the depth of the row they stand on (the table's, else 0.2, in front of the
        wall)."""
        rows = np.arange(SIDE, dtype=np.float32)
        line, shelf = self.params["line_row"], self.params["shelf_rows"]
        table = self.params["table"] is not None and line is not None
        per_row = np.zeros(SIDE, np.float32)
        if table:
            per_row = np.where(rows > line, 0.4 + 0.6 * (rows - line) / max(1, SIDE - 1 - line), 0.0).astype(np.float32)
        depth = np.repeat(per_row[:, None], SIDE, axis=1)
        if shelf is not None:
            depth[shelf[0]:shelf[1]] = 0.2

        def standing_on(row: int) -> float:
            return float(per_row[min(row, SIDE - 1)]) if table and row > line else 0.2

        if self.reference_mask is not None:
            depth[self.reference_mask] = standing_on(self.params["reference"]["ground_row"])
        solid = self.canvas.product_alpha > 127
        if self.part_mask is not None:
            solid = solid | self.part_mask
        # A stand lifts the product: product and stand stand on the table just below the line.
        foot = line + 1 if self.params["variant"] == "stand" else self.params["base_row"]
        depth[solid] = standing_on(foot)
        return depth


def draw_scene(label: str, rng: np.random.Generator) -> Scene:
    """Draw one scene of class ``label``; the same generator state gives the same scene."""
    if label not in CLASS_NAMES:
        raise ValueError(f"label: unknown {label!r}; expected one of {', '.join(CLASS_NAMES)}")
    look = sample_product(rng)
    product = draw_product(look.shape, look.colour, look.aspect, height=SIDE)
    canvas = prepare_canvas(product, MINIWORLD_CANVAS)
    box = _solid_box(canvas.product_alpha)
    left, top, right, base = box
    variant = str(rng.choice(VARIANTS[label]))
    light = str(rng.choice(list(LIGHTS)))
    gradient = LIGHTS[light][2]
    product_colour = np.array(look.colour, np.float32)
    walls = {name: lit(rgb, light) for name, rgb in WALLS.items()}
    tables = {name: lit(rgb, light) for name, (_, rgb) in TABLES.items()}
    if label == INDISTINCT:
        # The wall takes the product's colour (and name); lighting would only move it away.
        wall_name = look.colour_name
        wall = tuple(int(np.clip(c + rng.integers(-MATCH_JITTER, MATCH_JITTER + 1), 0, 255)) for c in look.colour)
        walls[wall_name] = wall
        gradient = min(gradient, 0.05)
        near_table = variant == "wall and table match"
        wall_name, table_name = _pick_backdrop(rng, product_colour, walls, tables, wall_name, near_table)
        if near_table:
            table_name = f"{look.colour_name} table"
            tables[table_name] = shade(wall, 0.88)
    else:
        wall_name, table_name = _pick_backdrop(rng, product_colour, walls, tables)
    wall, table = walls[wall_name], tables[table_name]
    line_colour = _line_colour(table, wall, None if label == INDISTINCT else product_colour)

    line_row = base - int(round(rng.uniform(*LINE_ABOVE_BASE) * SIDE))
    shelf, has_table, standing = None, True, label != SPACE
    if variant == "floating":
        line_row = min(SIDE - 6, base + int(round(rng.uniform(*FLOAT_GAP) * SIDE)))
    elif variant == "no support":
        has_table, line_row = False, None
    elif variant == "shelf only":
        has_table, line_row = False, None
        shelf_top = base - int(round(rng.uniform(*SHELF_ABOVE_BASE) * SIDE))
        shelf = (shelf_top, shelf_top + int(round(rng.uniform(0.05, 0.07) * SIDE)))
    stand = None
    if variant == "stand":
        stand = max(4, int(round(rng.uniform(0.1, 0.16) * (base - top + 1))))
        line_row = base + stand + 1

    pixels = _backdrop(wall, table if (has_table or shelf) else None, line_colour, line_row, shelf, gradient)
    if standing:
        _shadow(pixels, (left + right) / 2, base, right - left + 1, line_row)
    background = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(background)

    def drawn(before: np.ndarray) -> np.ndarray:
        """bool [H, W]: where the drawing since ``before`` changed the background."""
        return np.any(np.asarray(background) != before, axis=2)

    span = (left, right)  # columns taken by the product and any part attached to it
    part_mask = reference_mask = None
    if label == HALLUCINATION:
        before = np.asarray(background).copy()
        part = _draw_part(draw, rng, variant, canvas.product_alpha > 127, box, look.colour, stand)
        span = (min(left, part[0]), max(right, part[1]))
        part_mask = drawn(before) & (canvas.product_alpha <= 127)
    reference = None
    scale = variant if label == SIZE else "plausible"
    if label == SIZE or (label != SPACE and rng.random() < 0.5) or (variant == "floating" and rng.random() < 0.5):
        ground = line_row + int(rng.integers(1, 4)) if variant == "floating" else max(base, line_row) + int(rng.integers(0, 3))
        before = np.asarray(background).copy()
        reference = _draw_reference(draw, rng, span, base - top + 1, ground, scale, product_colour,
                                    (wall, table, line_colour))
        reference_mask = drawn(before) if reference is not None else None

    image = paste_back(np.asarray(background), canvas)
    if label == SIZE and reference is None:
        raise RuntimeError(f"no room or colour for a reference object beside product box {box}")
    prompt = _prompt(rng, look.noun, wall_name, table_name if has_table else None,
                     TABLES[table_name][0] if shelf else None, light, reference)
    params = {
        "variant": variant, "light": light, "wall": wall_name, "wall_rgb": list(wall),
        "table": table_name if has_table else None, "table_rgb": list(table) if has_table or shelf else None,
        "line_row": line_row, "shelf_rows": list(shelf) if shelf else None, "base_row": base,
        "product_box": [left, top, right, base], "reference": reference,
    }
    return Scene(label=label, product=product, canvas=canvas, image=image, prompt=prompt,
                 caption=look.caption, params=params, part_mask=part_mask, reference_mask=reference_mask)


def write_scene_dataset(
    out_dir: str | os.PathLike, n: int, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
    progress: bool = False, through_vae=None,
) -> Path:
    """Write ``n`` scenes (balanced over the classes) as a manifest plus ``scenes.jsonl``; return the manifest path.

    ``through_vae``: a runner (e.g. the generator's :class:`rfad.pipeline.torch_runner.TorchRunner`)
    whose VAE encodes and decodes every scene before the product is pasted back; such a scene is
    labelled by the oracle (what it shows after the decoder, as RF-mini's images are), the class
    drawn kept in ``scenes.jsonl`` as ``drawn``. Without it, the label is the class drawn.
    """
    from rfad.miniworld.oracle import label_ad

    def draw(label: str, rng: np.random.Generator) -> DrawnSample:
        scene = draw_scene(label, rng)
        if through_vae is None:
            return DrawnSample(scene.product, Image.fromarray(scene.image), scene.prompt, scene.caption, scene.params)
        from rfad.trainer.data.oracle_generated import vae_round_trip

        image = paste_back(vae_round_trip(through_vae, scene.image[None])[0], scene.canvas)
        verdict = label_ad(image, np.asarray(scene.canvas.product_rgba), scene.canvas.product_alpha)
        return DrawnSample(scene.product, Image.fromarray(image), scene.prompt, scene.caption, scene.params,
                           label=verdict.label)

    return write_drawn_dataset(out_dir, n, draw, seed=seed, prefix="scene", val_fraction=val_fraction,
                               test_fraction=test_fraction, progress=progress)


def class_mix(available: float) -> dict[str, float]:
    """The share of each class: ``available`` for Available, the four defects sharing the rest equally."""
    if not 0 <= available <= 1:
        raise ValueError(f"available share: must be in [0, 1], got {available}")
    return {name: available if name == AVAILABLE else (1 - available) / (len(CLASS_NAMES) - 1) for name in CLASS_NAMES}


def mixed_labels(n: int, mix: dict[str, float], rng: np.random.Generator) -> list[str]:
    """``n`` labels in the proportions of ``mix`` (largest remainders, so the counts sum to ``n``), shuffled."""
    shares = np.array([mix.get(name, 0.0) for name in CLASS_NAMES], np.float64)
    if shares.min() < 0 or shares.sum() <= 0:
        raise ValueError(f"class mix: shares must be >= 0 and not all 0, got {mix}")
    exact = n * shares / shares.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    labels = [name for name, count in zip(CLASS_NAMES, counts) for _ in range(count)]
    rng.shuffle(labels)
    return labels


def _solid_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of alpha > 127, all inclusive."""
    rows, cols = np.flatnonzero((alpha > 127).any(axis=1)), np.flatnonzero((alpha > 127).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def lit(rgb, light: str) -> tuple[int, int, int]:
    """``rgb`` as drawn under ``light`` (a :data:`LIGHTS` name): brightness and tint, clipped."""
    brightness, light_tint, _ = LIGHTS[light]
    return tuple(int(np.clip(round(c * brightness * t), 0, 255)) for c, t in zip(rgb, light_tint))


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def _line_colour(table, wall, colour=None) -> tuple[int, int, int] | None:
    """The table's back edge, seen against the wall and (given the product's ``colour``) far from it.

    A darker line on a light table, a lighter one on a dark table; the other when that one is too
    close to the wall or the product; None when neither keeps the margins.
    """
    options = [shade(table, 0.6), tint(table, 0.45)]
    for line in options if np.mean(table) > 100 else options[::-1]:
        if _distance(line, wall) >= VISIBLE + 5 and (colour is None or _distance(line, colour) >= LINE_FAR):
            return line
    return None


def _pick_backdrop(rng, colour, walls: dict, tables: dict, wall_name: str | None = None,
                   near_table: bool = False) -> tuple[str, str]:
    """A (wall, table) pair far from the product's ``colour`` (only the table, when ``wall_name`` is fixed)."""
    pairs = []
    for name in ([wall_name] if wall_name else walls):
        wall = walls[name]
        if not wall_name and _distance(wall, colour) < FAR:
            continue
        for table_name, table in tables.items():
            if near_table:
                if _line_colour(shade(wall, 0.88), wall) is None:
                    continue
            elif (_distance(table, colour) < FAR or _distance(table, wall) < VISIBLE
                  or _line_colour(table, wall, colour) is None):
                continue
            pairs.append((name, table_name))
    if not pairs:
        raise RuntimeError(f"no wall/table pair keeps the margins for product colour {colour.tolist()}")
    return pairs[int(rng.integers(len(pairs)))]


def _backdrop(wall, table, line_colour, line_row: int | None, shelf: tuple[int, int] | None,
              gradient: float) -> np.ndarray:
    """float32 [SIDE, SIDE, 3]: the wall (lighter at the top), the table or shelf, and their edge lines."""
    rows = np.arange(SIDE, dtype=np.float32)[:, None]
    span = line_row if line_row is not None else SIDE
    wall_rows = np.array(wall, np.float32) * (1 + gradient * (0.5 - np.clip(rows / span, 0, 1)))
    pixels = wall_rows
    if line_row is not None:
        table_rows = np.array(table, np.float32) * (1 - 0.1 * (rows - line_row) / max(SIDE - line_row, 1))
        pixels = np.where(rows <= line_row, wall_rows, table_rows)
        pixels[line_row - 1:line_row + 1] = line_colour
    if shelf is not None:
        top, bottom = shelf
        pixels[top:bottom] = shade(table, 0.85)
        pixels[top:top + 2] = line_colour
    return np.ascontiguousarray(np.broadcast_to(pixels[:, None, :], (SIDE, SIDE, 3)))


def _shadow(pixels: np.ndarray, centre_x: float, base: int, width: int, line_row: int) -> None:
    """Darken the table under the product's base with a soft ellipse (in place)."""
    mask = np.zeros(pixels.shape[:2], np.float32)
    cv2.ellipse(mask, (int(round(centre_x)), base), (max(2, int(0.6 * width)), max(2, int(0.035 * SIDE))),
                0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 2.0)
    mask[:line_row + 1] = 0
    pixels *= (1 - SHADOW_DARKENING * mask)[..., None]


def _draw_reference(draw: ImageDraw.ImageDraw, rng, span: tuple[int, int], product_height: int, ground: int,
                    scale: str, colour, backdrop) -> dict | None:
    """A potted plant, books or a vase on row ``ground`` beside columns ``span``; None if none fits.

    Its colours keep far from the product's ``colour`` and from every ``backdrop`` colour (wall,
    table, line), so that it stands out of every row it crosses.
    """
    left, right = span
    kind = str(rng.choice(REFERENCES))
    ratio = float(rng.uniform(*SCALES[scale]))
    height = max(5, int(round(ratio * product_height)))
    aspect = {"potted plant": (0.5, 0.8), "stack of books": (0.9, 1.4), "vase": (0.4, 0.6)}[kind]
    width = int(np.clip(round(height * rng.uniform(*aspect)), *REFERENCE_WIDTH))
    gap = int(rng.integers(5, 10))
    room = {"left": left - gap - 1, "right": SIDE - 2 - (right + gap)}
    side = str(rng.choice(["left", "right"]))
    if room[side] < width:
        side = max(room, key=room.get)
        width = min(width, room[side])
    if width < REFERENCE_WIDTH[0]:
        return None
    palette = [c for c in REFERENCE_COLOURS if _distance(c, colour) >= REFERENCE_FAR
               and all(_distance(c, other) >= VISIBLE + 25 for other in backdrop)]
    if not palette:
        return None
    first, second = (palette[i] for i in rng.choice(len(palette), 2, replace=len(palette) < 2))
    x0 = left - gap - width if side == "left" else right + gap + 1
    x1, y0 = x0 + width - 1, ground - height + 1
    if kind == "potted plant":
        pot_top = ground - int(round(0.4 * height))
        inset = max(1, width // 6)
        draw.ellipse((x0, y0, x1, pot_top + 2), fill=second)
        draw.polygon([(x0 + inset // 2, pot_top), (x1 - inset // 2, pot_top), (x1 - inset, ground), (x0 + inset, ground)],
                     fill=first)
    elif kind == "stack of books":
        count = int(rng.integers(2, 4))
        edges = np.linspace(ground + 1, y0, count + 1).round().astype(int)
        for i in range(count):
            indent = int(rng.integers(0, max(1, width // 5)))
            draw.rectangle((x0 + indent, edges[i + 1], x1 - indent // 2, edges[i] - 1), fill=(first, second)[i % 2])
    else:
        neck = max(2, width // 3)
        middle = (x0 + x1) // 2
        draw.rectangle((middle - neck // 2, y0, middle + neck // 2, y0 + height // 3), fill=first)
        draw.ellipse((x0, y0 + height // 4, x1, ground), fill=first)
    return {"kind": kind, "scale": scale, "ratio": round(ratio, 4), "height": height, "width": width, "side": side,
            "ground_row": ground}


def _draw_part(draw: ImageDraw.ImageDraw, rng, kind: str, solid: np.ndarray, box, colour,
               stand: int | None) -> tuple[int, int]:
    """A product-coloured part attached to the product's outline (outside it: the product is pasted
    back); returns the first and last column it covers."""
    left, top, right, base = box
    height, width = base - top + 1, right - left + 1
    if kind in ("bulge", "handle"):
        row = top + int(round(rng.uniform(0.35, 0.7) * height))
        cols = np.flatnonzero(solid[row])
        outward = -1 if rng.random() < 0.5 else 1
        edge = int(cols[0] if outward < 0 else cols[-1])
        if kind == "bulge":
            radius = max(4, int(round(rng.uniform(0.16, 0.24) * height)))
            cx = edge + outward * (radius // 3)
            draw.ellipse((cx - radius, row - radius, cx + radius, row + radius), fill=colour)
            return cx - radius, cx + radius
        else:
            half_w = max(4, int(round(rng.uniform(0.18, 0.28) * height)))
            half_h = max(5, int(round(rng.uniform(0.2, 0.3) * height)))
            draw.ellipse((edge - half_w, row - half_h, edge + half_w, row + half_h), outline=colour,
                         width=int(rng.integers(5, 8)))  # bold: a 16 x 16 latent blurs thin strokes away
            return edge - half_w, edge + half_w
    elif kind == "horn":
        half = max(4, int(round(rng.uniform(0.2, 0.3) * width)))
        cx = (left + right) // 2 + int(round(rng.uniform(-0.2, 0.2) * width))
        crown = int(np.flatnonzero(solid[:, cx])[0])
        tip = max(1, crown - int(round(rng.uniform(0.35, 0.55) * height)))
        draw.polygon([(cx - half, crown + 3), (cx + half, crown + 3), (cx, tip)], fill=colour)
        return cx - half, cx + half
    else:  # a stand the product sits on, standing on the table line
        spread = int(round(rng.uniform(0.1, 0.3) * width))
        spread = min(spread, max(0, (int(0.8 * SIDE) - width) // 2))
        draw.rectangle((left - spread, base - 1, right + spread, base + stand), fill=shade(colour, 0.9))
        return left - spread, right + spread


def _prompt(rng, noun: str, wall: str, table: str | None, shelf: str | None, light: str, reference: dict | None) -> str:
    """What an ad system would have asked for this scene: its objects and light, never its defect."""
    where = _a(noun) + (f" on {_a(table)}" if table else "") + f" in front of {_a(wall)} wall"
    if shelf:
        where += f" with {_a(shelf)} shelf"
    parts = [where, light] + ([f"beside {_a(reference['kind'])}"] if reference else []) + [str(rng.choice(STYLES))]
    return ", ".join(parts)


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words
