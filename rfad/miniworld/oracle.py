"""The oracle: the miniature world's human annotator, a label from measured geometry and colour.

RF-mini (docs/design.md, the miniature world) replaces the paper's human labellers by this function. Given an ad
image, the product cut-out and where the canvas placed it, :func:`label_ad` measures four things
and applies one rule per defect (:data:`RULES` states each rule with its thresholds; the docs
render that table from here):

- Indistinctiveness: how much of a thin ring around the product has the product's own colour;
- Shape Hallucination: how much product-coloured area is attached to the product outside its mask;
- Space Mismatch: whether a support line (table or ground edge) runs near the product's base;
- Size Mismatch: the height of reference objects standing at the product's depth, relative to
  the product, and the product's height relative to the frame.

The verdict is the first defect that fires in :data:`PRECEDENCE`, or Available if none does; it
carries every measurement, so a label can be explained (:meth:`OracleVerdict.explain`).

The rules read the scene the miniature world draws (and the generator learns to paint): a wall
and a table whose colours change down the image but not across it, a support line between them,
optional objects. The background of a row is therefore its median colour away from the product.
Lengths are fractions of the image height H (tuned at H = 128: 0.016 H is 2 px); colour
distances are Euclidean in RGB (0..441). Torch-free: numpy and OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rfad.contract import CLASS_NAMES

AVAILABLE, SPACE, SIZE, INDISTINCT, HALLUCINATION = CLASS_NAMES

# Shared measurements.
EDGE_BAND = 0.016           # the pasted product's anti-aliased rim (px from alpha > 0): neither product nor background
PRODUCT_COLOURED = 45.0     # a pixel this close to the product's median colour has the product's colour
OBJECT_COLOUR = 40.0        # a pixel this far from its row's background colour belongs to an object
ATTACHED = 0.012            # a region reaching this close to the rim (beyond EDGE_BAND) touches the product
# Indistinctiveness.
RING_WIDTH = 0.0625         # the ring around the product: from EDGE_BAND to EDGE_BAND + RING_WIDTH
NEAR_COLOUR = 60.0          # a ring pixel this close to the product's colour does not set it apart
NEAR_FRACTION = 0.5
# Shape Hallucination.
HALLUCINATED_AREA = 0.02    # attached product-coloured area / product area
BAND_COVERAGE = 0.75        # a row product-coloured from edge to edge over this share of it is a wall/table band
# Space Mismatch.
STEP_COLOUR = 30.0          # colour change between rows y-2 and y+2 of one column that makes an edge
LINE_COVERAGE = 0.5         # a row is a line when this fraction of its free columns has an edge there
SUPPORT_ABOVE = 0.15        # a product stands on a table whose back edge is up to this far above its base
SUPPORT_BELOW = 0.04        # ... or this far below it (drawing tolerance)
# Size Mismatch.
SAME_DEPTH = 0.06           # an object whose bottom is this close to the product's base stands beside it
REFERENCE_AREA = 0.0012     # smaller objects (x H^2) are specks, not scale cues
OVER_PRODUCT = 0.5          # an object with more of its columns over the product's is under it (a shadow), not beside it
SCALE_RANGE = (0.27, 1.35)  # plausible reference height / product height for tabletop objects
MIN_PRODUCT_HEIGHT = 0.2    # a tabletop product framed smaller than this (x H) is dwarfed by its scene

PRECEDENCE = (INDISTINCT, HALLUCINATION, SPACE, SIZE)
PRECEDENCE_REASON = (
    "A rule whose measurement needs the product told apart from its background comes after the rule that "
    "says it cannot be (Indistinctiveness); an extra part explains an apparent float (a stand under the "
    "product lifts its base off the table line); scale cues are read on a support, so Space comes before Size."
)


@dataclass(frozen=True)
class Rule:
    """One defect rule as the docs state it: what is measured, and when the rule fires."""

    label: str
    measures: str
    fires_when: str


RULES = (
    Rule(INDISTINCT,
         f"`ring_near_fraction`: fraction of the ring {EDGE_BAND} H to {EDGE_BAND + RING_WIDTH:.4g} H around the "
         f"product whose colour is within {NEAR_COLOUR:g} of the product's median colour",
         f"`ring_near_fraction` >= {NEAR_FRACTION:g}"),
    Rule(HALLUCINATION,
         f"`hallucinated_area`: area of the product-coloured regions (within {PRODUCT_COLOURED:g} of its colour) "
         f"outside the product's rim ({EDGE_BAND} H) that touch it, divided by the product's area; rows "
         f"product-coloured at both image edges and over {BAND_COVERAGE:g} of their width are a wall or table "
         "band (a line the product stands on), not a part, and are left out",
         f"`hallucinated_area` >= {HALLUCINATED_AREA:g}"),
    Rule(SPACE,
         "`support_lines`: rows where at least "
         f"{LINE_COVERAGE:g} of the columns free of product and objects change colour by more than "
         f"{STEP_COLOUR:g} between rows y-2 and y+2, as offsets from the product's base row (x H, + is below)",
         f"no support line lies in [-{SUPPORT_ABOVE:g}, +{SUPPORT_BELOW:g}] H of the base"),
    Rule(SIZE,
         f"`reference_ratios`: height / product height of every object (pixels more than {OBJECT_COLOUR:g} from "
         f"their row's background, not product-coloured, beyond {EDGE_BAND + ATTACHED:g} H of the product's "
         f"silhouette, bridged over gaps of up to 4 rows where a line of their colour crosses them, over "
         f"{REFERENCE_AREA:g} H^2, beside the product: at most {OVER_PRODUCT:g} of their columns over its columns) "
         f"whose bottom is within {SAME_DEPTH:g} H of the product's base; `product_height`: product height / H",
         f"a ratio is outside [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}], or `product_height` < {MIN_PRODUCT_HEIGHT:g}"),
)


@dataclass(frozen=True)
class OracleVerdict:
    """The oracle's label, every rule that fired (in :data:`PRECEDENCE` order) and the measurements."""

    label: str
    fired: tuple[str, ...]
    measurements: dict

    def explain(self) -> str:
        """One line per rule: the measurement and whether it fired."""
        m = self.measurements
        support = ", ".join(f"{offset:+.3f}" for offset in m["support_lines"]) or "none"
        ratios = ", ".join(f"{ratio:.2f}" for ratio in m["reference_ratios"]) or "none"
        lines = {
            INDISTINCT: f"ring_near_fraction {m['ring_near_fraction']:.2f}",
            HALLUCINATION: f"hallucinated_area {m['hallucinated_area']:.3f}",
            SPACE: f"support_lines {support}",
            SIZE: f"reference_ratios {ratios}; product_height {m['product_height']:.2f}",
        }
        return "\n".join(f"{name}: {lines[name]}{' -> fires' if name in self.fired else ''}" for name in PRECEDENCE) \
            + f"\nlabel: {self.label}"


def label_ad(image: np.ndarray, product: np.ndarray, placement: np.ndarray) -> OracleVerdict:
    """Label one ad image as Available or one of the four defects.

    ``image``: uint8 [H, W, 3] RGB, the ad (product pasted back). ``product``: uint8 [h, w, 4]
    RGBA, the product cut-out (only its opaque pixels' colours are read). ``placement``: uint8
    [H, W], the product's alpha on the canvas (``AdCanvas.product_alpha``). Raises ValueError
    naming the argument when a shape or dtype is wrong or the product has no opaque pixel.
    """
    rgb, colour, alpha = _checked(image, product, placement)
    height = alpha.shape[0]
    solid = alpha > 127
    rows = np.flatnonzero(solid.any(axis=1))
    top, base = int(rows[0]), int(rows[-1])
    # Distance (px) of every pixel from the product's silhouette; 0 on it.
    distance = cv2.distanceTransform((alpha == 0).astype(np.uint8), cv2.DIST_L2, 3)
    rim = EDGE_BAND * height
    beyond = distance > rim
    touching = beyond & (distance <= rim + ATTACHED * height)
    product_coloured = np.linalg.norm(rgb - colour, axis=2) < PRODUCT_COLOURED
    background = _row_background(rgb, beyond)
    objects = beyond & (np.linalg.norm(rgb - background[:, None, :], axis=2) > OBJECT_COLOUR)

    ring = beyond & (distance <= rim + RING_WIDTH * height)
    near = np.linalg.norm(rgb[ring] - colour, axis=1) < NEAR_COLOUR
    measurements = {
        "ring_near_fraction": float(near.mean()) if near.size else 0.0,
        "hallucinated_area": _hallucinated_area(beyond & product_coloured, beyond, touching) / float(solid.sum()),
        "support_lines": _support_lines(rgb, beyond & ~_grow(objects, 1), base),
        # (top, bottom) rows of every object standing beside the product, at any depth.
        "objects_beside": _objects_beside(_bridge_lines(objects & ~product_coloured & ~touching), solid),
        "product_height": (base - top + 1) / height,
    }
    measurements["reference_ratios"] = _reference_ratios(measurements["objects_beside"], base, base - top + 1, height)
    fires = {
        INDISTINCT: measurements["ring_near_fraction"] >= NEAR_FRACTION,
        HALLUCINATION: measurements["hallucinated_area"] >= HALLUCINATED_AREA,
        SPACE: not any(-SUPPORT_ABOVE <= offset <= SUPPORT_BELOW for offset in measurements["support_lines"]),
        SIZE: (any(not SCALE_RANGE[0] <= ratio <= SCALE_RANGE[1] for ratio in measurements["reference_ratios"])
               or measurements["product_height"] < MIN_PRODUCT_HEIGHT),
    }
    fired = tuple(name for name in PRECEDENCE if fires[name])
    return OracleVerdict(label=fired[0] if fired else AVAILABLE, fired=fired, measurements=measurements)


def _checked(image, product, placement) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image as float32 [H, W, 3], product median colour float32 [3], placement uint8 [H, W])."""
    for name, value, channels in (("image", image, 3), ("product", product, 4)):
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != channels:
            raise ValueError(f"{name}: expected a uint8 array [H, W, {channels}], got "
                             f"{getattr(value, 'dtype', type(value).__name__)} {list(getattr(value, 'shape', []))}")
    if not isinstance(placement, np.ndarray) or placement.dtype != np.uint8 or placement.shape != image.shape[:2]:
        raise ValueError(f"placement: expected a uint8 alpha array {list(image.shape[:2])} (the image's H, W), got "
                         f"{getattr(placement, 'dtype', type(placement).__name__)} {list(getattr(placement, 'shape', []))}")
    if min(image.shape[:2]) < 32:
        raise ValueError(f"image: each side must be at least 32 px, got {image.shape[1]}x{image.shape[0]}")
    opaque = product[..., 3] > 127
    if not opaque.any():
        raise ValueError("product: no opaque pixel (alpha > 127): the cut-out has no colour to compare")
    if not (placement > 127).any():
        raise ValueError("placement: no pixel with alpha > 127: the product is not on the canvas")
    colour = np.median(product[opaque][:, :3].astype(np.float32), axis=0)
    return image.astype(np.float32), colour, placement


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _bridge_lines(mask: np.ndarray) -> np.ndarray:
    """Close vertical gaps of up to 4 rows: where an object crosses a line of its own colour, the
    line's rows are background by the row model and would cut the object in two."""
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 1), np.uint8)).astype(bool)


def _row_background(rgb: np.ndarray, free: np.ndarray) -> np.ndarray:
    """float32 [H, 3]: each row's median colour over ``free`` pixels (rows without any: the nearest row's)."""
    # Sorting puts NaN last, so the median of a row's n free pixels sits at (n - 1) // 2 and n // 2
    # (np.nanmedian does the same, several times slower).
    ordered = np.sort(np.where(free[..., None], rgb, np.nan), axis=1)
    counts = free.sum(axis=1)
    known = np.flatnonzero(counts > 0)
    low = np.take_along_axis(ordered, ((counts - 1) // 2).clip(0)[:, None, None], axis=1)[:, 0]
    high = np.take_along_axis(ordered, (counts // 2)[:, None, None], axis=1)[:, 0]
    background = np.empty((rgb.shape[0], 3), np.float32)
    background[known] = (low[known] + high[known]) / 2
    # A product as wide as the frame leaves rows without background; borrow the nearest row's.
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        nearest = known[np.abs(known[None, :] - missing[:, None]).argmin(axis=1)]
        background[missing] = background[nearest]
    return background


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    return cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)[:3]


def _hallucinated_area(candidates: np.ndarray, beyond: np.ndarray, touching: np.ndarray) -> float:
    """Pixels of the ``candidates`` regions that touch the product, band rows left out.

    A product-coloured table line runs under the product and is cut in two by it; each half
    touches the product. Reaching both image edges tells it from a part grown out of the product.
    """
    bands = candidates[:, 0] & candidates[:, -1] & (candidates.sum(axis=1) >= BAND_COVERAGE * beyond.sum(axis=1))
    parts = candidates & ~bands[:, None]
    count, labels, stats = _components(parts)
    attached = np.unique(labels[parts & touching])
    return float(sum(stats[i, cv2.CC_STAT_AREA] for i in attached))


def _support_lines(rgb: np.ndarray, free: np.ndarray, base: int) -> list[float]:
    """Offsets (x H, + below) from ``base`` of the rows where a line crosses the free columns."""
    height, width = free.shape
    # Comparing rows 4 apart finds an edge that a decoder has blurred over a few rows.
    step = np.linalg.norm(rgb[4:] - rgb[:-4], axis=2)           # row k compares rows k and k+4 (centre k+2)
    usable = free[4:] & free[:-4] & free[2:-2]
    counts = usable.sum(axis=1)
    coverage = (usable & (step > STEP_COLOUR)).sum(axis=1) / np.maximum(counts, 1)
    is_line = (counts >= 0.1 * width) & (coverage >= LINE_COVERAGE)
    strength = (step * usable).sum(axis=1) / np.maximum(counts, 1)
    offsets, k = [], 0
    while k < len(is_line):
        if not is_line[k]:
            k += 1
            continue
        end = k
        while end + 1 < len(is_line) and is_line[end + 1]:
            end += 1
        centre = k + int(np.argmax(strength[k:end + 1])) + 2
        offsets.append((centre - base) / height)
        k = end + 1
    return offsets


def _objects_beside(candidates: np.ndarray, solid: np.ndarray) -> list[list[int]]:
    """[top, bottom] rows of each object beside the product, top to bottom.

    ``candidates`` leaves out the band where an object would touch the product: a decoder's blur
    bridges the few pixels between a reference object and the product (or its shadow), and an
    object cut off there is still read. What lies mostly over the product's columns is under or
    above it (its shadow, the decoder's halo), not an object beside it; specks are not objects.
    """
    height = candidates.shape[0]
    columns = np.flatnonzero(solid.any(axis=0))
    left, right = int(columns[0]), int(columns[-1])
    count, labels, stats = _components(candidates)
    beside = []
    for i in range(1, count):
        x, top, wide, tall, area = (int(v) for v in stats[i, :5])
        if area < REFERENCE_AREA * height * height:
            continue
        over = max(0, min(x + wide - 1, right) - max(x, left) + 1)
        if over > OVER_PRODUCT * wide:
            continue
        beside.append([top, top + tall - 1])
    return sorted(beside)


def _reference_ratios(beside: list[list[int]], base: int, product_height: int, height: int) -> list[float]:
    """Height / ``product_height`` of each object ``beside`` the product (:func:`_objects_beside`) whose
    bottom is near ``base``: the objects standing at the product's depth, its scale cues."""
    return sorted(round(float((bottom - top + 1) / product_height), 4) for top, bottom in beside
                  if abs(bottom - base) <= SAME_DEPTH * height)
