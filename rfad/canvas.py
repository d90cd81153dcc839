"""The ad canvas: a product cut-out placed on an empty canvas, with everything generation needs.

docs/design.md, one ad request, step 1. A product arrives as an RGBA cut-out (transparent background). It
is cropped to its alpha bounding box, scaled to fit ``product_scale`` of the canvas, centred,
and turned into the arrays the denoising loop reads once per request: the init image, the
generate-mask, the ControlNet edge image, and the product itself for pasting back afterwards.

Product images come from outside (ad systems, users), so decoding is defensive: the pixel
count is checked from the header before any pixel is decoded, only common photo formats are
decoded at all, and every failure is a :class:`CanvasError` that says what is wrong.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from rfad.contract import DEFAULTS

# Formats a product cut-out plausibly arrives in. PIL knows dozens more, several rarely used and
# historically fragile; untrusted bytes never reach those decoders.
DECODED_FORMATS = ("PNG", "WEBP", "TIFF", "GIF", "BMP", "JPEG")
MIN_CANVAS_SIDE = 64  # smallest canvas side in pixels
# The VAE downsamples by 8; other canvas sides would be cropped or padded silently downstream.
CANVAS_MULTIPLE = 8
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class CanvasError(ValueError):
    """Every bad product image raises this, with a message naming the problem and the limit."""


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; CanvasSpec(width=True) is a bug, not a 1-pixel canvas.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {value}")


@dataclass(frozen=True)
class CanvasSpec:
    """How a product is placed on the canvas and how the masks and control image are made."""

    width: int = DEFAULTS.canvas_size
    height: int = DEFAULTS.canvas_size
    product_scale: float = DEFAULTS.product_scale  # product bbox fits within product_scale*width x product_scale*height
    upscale: bool = False           # False: only shrink products larger than that box (pixels then stay exact)
    mask_dilation: int = 20         # square kernel size (pixels) for dilating the generate-mask; 0 or 1: none
    canny_low: int = 100
    canny_high: int = 200
    min_side: int = 16              # the image and its alpha bbox must be at least this many px on each side
    max_pixels: int = 4096 * 4096   # decompression-bomb guard, checked from the header before decoding
    background: tuple[int, int, int] = (255, 255, 255)  # colour under the product in the init image

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            _check_int(name, value, MIN_CANVAS_SIDE)
            if value % CANVAS_MULTIPLE:
                raise ValueError(f"{name}: must be a multiple of {CANVAS_MULTIPLE}, got {value}")
        if isinstance(self.product_scale, bool) or not isinstance(self.product_scale, (int, float)):
            raise ValueError(f"product_scale: expected a number, got {type(self.product_scale).__name__}")
        if not 0 < self.product_scale <= 1:
            raise ValueError(f"product_scale: must be in (0, 1], got {self.product_scale}")
        if not isinstance(self.upscale, bool):
            raise ValueError(f"upscale: expected a bool, got {type(self.upscale).__name__}")
        _check_int("mask_dilation", self.mask_dilation, 0)
        _check_int("canny_low", self.canny_low, 0)
        _check_int("canny_high", self.canny_high, 0)
        if self.canny_low > self.canny_high:
            raise ValueError(f"canny_low: must not exceed canny_high ({self.canny_high}), got {self.canny_low}")
        _check_int("min_side", self.min_side, 1)
        _check_int("max_pixels", self.max_pixels, self.min_side * self.min_side)
        background = tuple(self.background)
        if len(background) != 3 or not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in background):
            raise ValueError(f"background: expected three ints in 0..255, got {self.background!r}")
        object.__setattr__(self, "background", tuple(int(c) for c in background))


# What a model set may declare about its canvas (rfad-models.json "canvas"): how the generator
# was trained to place products. The export manifest carries it to the served pipeline and judge.
DECLARED_CANVAS_KEYS = ("width", "height", "product_scale", "upscale", "mask_dilation")


def canvas_from_dict(values, where: str) -> CanvasSpec:
    """A :class:`CanvasSpec` from a declared canvas (keys of :data:`DECLARED_CANVAS_KEYS`); a
    ValueError starting with ``where`` names an unknown key or a bad value."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected an object with keys {list(DECLARED_CANVAS_KEYS)}, got {values!r}")
    unknown = sorted(set(values) - set(DECLARED_CANVAS_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; a canvas declares {list(DECLARED_CANVAS_KEYS)}")
    try:
        return CanvasSpec(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}.{exc}") from None


def canvas_to_dict(spec: CanvasSpec) -> dict:
    """The declared form of ``spec`` (what :func:`canvas_from_dict` reads back)."""
    return {key: getattr(spec, key) for key in DECLARED_CANVAS_KEYS}


# eq=False: the generated __eq__ would compare arrays with ==, whose truth value is ambiguous.
@dataclass(frozen=True, eq=False)
class AdCanvas:
    """A product placed on the canvas; H x W is ``spec.height`` x ``spec.width``."""

    init_image: np.ndarray      # uint8 [H, W, 3]: product composited over spec.background
    mask: np.ndarray            # uint8 [H, W]: 255 = generate, 0 = keep; 255 - alpha, dilated
    product_alpha: np.ndarray   # uint8 [H, W]: the product's own (undilated) alpha
    product_rgb: np.ndarray     # uint8 [H, W, 3]: the product's colours, 0 where alpha is 0
    control_image: np.ndarray   # uint8 [H, W, 3]: Canny edges of product_rgb, 3 equal channels
    product_rgba: np.ndarray    # uint8 [h, w, 4]: the cropped (and possibly resized) cut-out as placed
    box: tuple[int, int, int, int]  # (left, top, right, bottom) on the canvas, right/bottom exclusive
    spec: CanvasSpec


def load_product_image(source, max_pixels: int = CanvasSpec.max_pixels, min_side: int = 16) -> Image.Image:
    """Decode a product cut-out into an RGBA PIL image of at least ``min_side`` px a side.

    ``source`` is a path (str or os.PathLike), the bytes of an image file (PNG, WebP, ...) or a
    PIL image. The size is checked against ``max_pixels`` before any pixel is decoded. The image
    must carry transparency: an alpha channel, or a palette/colour-key ``transparency`` entry.
    PIL's own global guard (``Image.MAX_IMAGE_PIXELS``) still applies on top of ``max_pixels``.
    Raises :class:`CanvasError`.
    """
    if isinstance(source, Image.Image):
        return _decode_rgba(source, max_pixels, min_side)
    with _open_lazily(source, max_pixels) as image:
        return _decode_rgba(image, max_pixels, min_side)


def load_ad_image(source, max_pixels: int = CanvasSpec.max_pixels, min_side: int = 16,
                  label: str = "image") -> np.ndarray:
    """Decode a finished ad image (to be judged) into uint8 [H, W, 3] RGB.

    ``source`` as for :func:`load_product_image`; any mode is accepted (alpha is dropped, a
    palette or 16-bit image is converted). The size is checked against ``max_pixels`` before
    any pixel is decoded. Raises :class:`CanvasError` whose message starts with ``label``.
    """
    with ad_image_rows(source, max_pixels, min_side, label) as (_, height, read_rows):
        return read_rows(np.arange(height))


@contextmanager
def ad_image_rows(source, max_pixels: int = CanvasSpec.max_pixels, min_side: int = 16, label: str = "image"):
    """Open an ad image as :func:`load_ad_image` does, and yield ``(width, height, read_rows)``:
    ``read_rows(rows)`` -> uint8 [len(rows), W, 3] RGB for sorted row indices, the same pixels as
    ``load_ad_image(source)[rows]``. The judge reads only the rows its resize touches, so a 4096-px
    ad is decoded once (PIL's own buffer) and never copied whole into numpy. Raises
    :class:`CanvasError` whose message starts with ``label``.
    """
    if isinstance(source, Image.Image):
        yield _rgb_rows(source, max_pixels, min_side, label)
        return
    image = _open_lazily(source, max_pixels, label)
    try:
        yield _rgb_rows(image, max_pixels, min_side, label)
    finally:
        # close() frees the decoded pixels now; Image's own __exit__ closes only the file, and
        # read_rows (which the caller may still hold) would keep them alive.
        image.close()


def _rgb_rows(image: Image.Image, max_pixels: int, min_side: int, label: str):
    width, height = image.size
    if width * height > max_pixels:
        raise CanvasError(f"{label}: {width}x{height} = {width * height} px is over the limit of {max_pixels} px "
                          "(max_pixels); refusing to decode it")
    if width < min_side or height < min_side:
        raise CanvasError(f"{label}: {width}x{height} px is too small; each side must be at least {min_side} px")

    def rgb(run: np.ndarray) -> np.ndarray:
        # A crop per run of consecutive rows (none for the whole image), and convert() on the
        # crop, not the image, so a palette, 16-bit or RGBA ad never has a whole converted copy.
        whole = run[0] == 0 and run[-1] == height - 1
        part = image if whole else image.crop((0, int(run[0]), width, int(run[-1]) + 1))
        return np.asarray(part if part.mode == "RGB" else part.convert("RGB"))

    def read_rows(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        try:
            runs = [rgb(run) for run in np.split(rows, breaks) if len(run)]
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CanvasError(f"{label}: too many pixels ({exc}); the limit is {max_pixels} px") from exc
        except Exception as exc:
            raise CanvasError(f"{label}: corrupt or truncated ({type(exc).__name__}: {exc})") from exc
        return runs[0] if len(runs) == 1 else np.concatenate(runs)

    return width, height, read_rows


def _open_lazily(source, max_pixels: int, label: str = "product image") -> Image.Image:
    """Image.open reads only the header: nothing is decoded until .load()."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise CanvasError(f"{label}: empty bytes; expected the bytes of an image file (PNG, WebP, ...)")
        what, fp = f"{len(source)} bytes", io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(os.fsdecode(source))
        if not path.is_file():
            raise CanvasError(f"{label}: no such file: '{path}'")
        what, fp = f"file '{path}'", path
    else:
        raise CanvasError(f"{label}: expected a path, bytes or PIL.Image.Image, got {type(source).__name__}")
    try:
        return Image.open(fp, formats=DECODED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CanvasError(f"{label}: too many pixels ({exc}); the limit is {max_pixels} px") from exc
    except UnidentifiedImageError as exc:
        raise CanvasError(f"{label}: {what} is not an image in a supported format "
                          f"({', '.join(DECODED_FORMATS)})") from exc
    except Exception as exc:
        # Header parsers raise more than OSError on crafted input (SyntaxError, struct.error, ...).
        raise CanvasError(f"{label}: {what} has a corrupt header ({type(exc).__name__}: {exc})") from exc


def _has_alpha(image: Image.Image) -> bool:
    # Palette and colour-key images keep their transparency in info, not in a channel.
    return image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info)


def _decode_rgba(image: Image.Image, max_pixels: int, min_side: int) -> Image.Image:
    width, height = image.size
    if width * height > max_pixels:
        raise CanvasError(f"product image: {width}x{height} = {width * height} px is over the limit of "
                          f"{max_pixels} px (max_pixels); refusing to decode it")
    if width < min_side or height < min_side:
        raise CanvasError(f"product image: {width}x{height} px is too small; each side must be at least "
                          f"{min_side} px (min_side)")
    if not _has_alpha(image):
        raise CanvasError(f"product image: no alpha channel (mode '{image.mode}'); a cut-out PNG/WebP with "
                          "transparency is required")
    try:
        # convert() loads the pixels and always returns a new image, detached from any open file.
        return image.convert("RGBA")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CanvasError(f"product image: too many pixels ({exc}); the limit is {max_pixels} px") from exc
    except Exception as exc:
        raise CanvasError(f"product image: corrupt or truncated ({type(exc).__name__}: {exc})") from exc


def _alpha_bbox(alpha: np.ndarray, min_side: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of alpha > 0 in uint8 [h, w] alpha; checks there is a product to place."""
    if not alpha.any():
        raise CanvasError("product image: fully transparent (alpha is 0 everywhere): nothing to place")
    if (alpha == 255).all():
        raise CanvasError("product image: no transparent pixels: nothing to generate; expected a cut-out product")
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    left, top, right, bottom = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    if right - left < min_side or bottom - top < min_side:
        raise CanvasError(f"product image: the product (alpha > 0) is only {right - left}x{bottom - top} px; "
                          f"each side must be at least {min_side} px (min_side)")
    return left, top, right, bottom


def _placed_size(width: int, height: int, spec: CanvasSpec) -> tuple[int, int]:
    limit_w, limit_h = spec.product_scale * spec.width, spec.product_scale * spec.height
    factor = min(limit_w / width, limit_h / height)
    if factor >= 1 and not spec.upscale:
        return width, height
    # min() guards float error pushing a side one pixel over the box.
    return (max(1, min(int(limit_w), round(width * factor))),
            max(1, min(int(limit_h), round(height * factor))))


def _composite(front: np.ndarray, alpha: np.ndarray, back: np.ndarray) -> np.ndarray:
    """uint8 front over back with uint8 alpha [..., H, W]; exact at alpha 0 and 255.

    (front * a + back * (255 - a) + 127) // 255 in uint16, in place: the largest sum, 255 * 255 + 127,
    fits, and a 4096-px canvas then needs two 100 MB temporaries instead of int32's seven 200 MB ones.
    """
    a = alpha[..., None]
    out = np.empty(np.broadcast_shapes(front.shape, back.shape), np.uint16)  # paste_back: one front, N backs
    out[...] = front
    out *= a
    rest = back.astype(np.uint16)
    rest *= 255 - a
    out += rest
    del rest
    out += 127
    out //= 255
    return out.astype(np.uint8)


def _place(source, spec: CanvasSpec) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The product cut-out of ``source`` resized for ``spec``'s canvas (uint8 RGBA [h, w, 4]) and
    the box (x0, y0, x1, y1) it is centred in."""
    rgba = np.asarray(load_product_image(source, spec.max_pixels, spec.min_side))
    left, top, right, bottom = _alpha_bbox(rgba[..., 3], spec.min_side)
    product = Image.fromarray(np.ascontiguousarray(rgba[top:bottom, left:right]))
    size = _placed_size(product.width, product.height, spec)
    if size != product.size:
        # Pillow premultiplies alpha while resampling RGBA, so transparent pixels' colours do not bleed in.
        product = product.resize(size, Image.Resampling.LANCZOS)
    product_rgba = np.array(product)
    h, w = product_rgba.shape[:2]
    x0, y0 = (spec.width - w) // 2, (spec.height - h) // 2
    return product_rgba, (x0, y0, x0 + w, y0 + h)


_BAND_ROWS = 256  # rows composited at a time: the temporaries of a 4096-px canvas stay a few MB


def _init_rows(product_rgba: np.ndarray, box: tuple[int, int, int, int], spec: CanvasSpec,
               rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the init image (uint8 [len(rows), W, 3]): the background, and the product
    composited over it where ``rows`` cross the box (outside the box alpha is 0)."""
    x0, y0, x1, y1 = box
    out = np.empty((len(rows), spec.width, 3), np.uint8)
    out[...] = np.array(spec.background, np.uint8)
    inside = (rows >= y0) & (rows < y1)
    if inside.any():
        band = product_rgba[rows[inside] - y0]
        out[inside, x0:x1] = _composite(band[..., :3], band[..., 3], out[inside, x0:x1])
    return out


def _init_image(product_rgba: np.ndarray, box: tuple[int, int, int, int], spec: CanvasSpec) -> np.ndarray:
    """The product over the background colour, uint8 [H, W, 3], in bands of rows."""
    init = np.empty((spec.height, spec.width, 3), np.uint8)
    for top in range(0, spec.height, _BAND_ROWS):
        rows = np.arange(top, min(top + _BAND_ROWS, spec.height))
        init[rows[0]:rows[-1] + 1] = _init_rows(product_rgba, box, spec, rows)
    return init


def place_product(source, spec: CanvasSpec = CanvasSpec()) -> np.ndarray:
    """``prepare_canvas(source, spec).init_image`` (uint8 [H, W, 3]) without the mask, edges and
    control image: what the judge endpoint needs of a product, at a fraction of the memory on
    large canvases. Raises :class:`CanvasError` like :func:`prepare_canvas`."""
    return _init_image(*_place(source, spec), spec)


def placed_rows(source, spec: CanvasSpec = CanvasSpec()):
    """``place_product`` read by rows: ``(spec.width, spec.height, read_rows)`` with ``read_rows(rows)``
    -> ``place_product(source, spec)[rows]``; the canvas itself is never built (the judge reads at
    most 2 x its working size of a 4096-row canvas). Raises :class:`CanvasError` like :func:`prepare_canvas`."""
    product_rgba, box = _place(source, spec)
    return spec.width, spec.height, lambda rows: _init_rows(product_rgba, box, spec, np.asarray(rows, np.int64))


def prepare_canvas(source, spec: CanvasSpec = CanvasSpec()) -> AdCanvas:
    """Place a product cut-out (path, image-file bytes or PIL image) on a canvas of ``spec``'s size.

    Raises :class:`CanvasError` for anything that is not a usable cut-out.
    """
    product_rgba, box = _place(source, spec)
    x0, y0, x1, y1 = box
    product_alpha = np.zeros((spec.height, spec.width), np.uint8)
    product_alpha[y0:y1, x0:x1] = product_rgba[..., 3]
    product_rgb = np.zeros((spec.height, spec.width, 3), np.uint8)
    product_rgb[y0:y1, x0:x1] = product_rgba[..., :3]
    product_rgb[product_alpha == 0] = 0
    init_image = _init_image(product_rgba, box, spec)
    mask = 255 - product_alpha
    if spec.mask_dilation > 1:
        # Generating a margin over the product's edge hides the seam between old and new pixels;
        # paste_back restores the product itself with the undilated alpha.
        mask = cv2.dilate(mask, np.ones((spec.mask_dilation, spec.mask_dilation), np.uint8))
    edges = cv2.Canny(cv2.cvtColor(product_rgb, cv2.COLOR_RGB2GRAY), spec.canny_low, spec.canny_high)
    control_image = np.repeat(edges[..., None], 3, axis=2)
    return AdCanvas(init_image=init_image, mask=mask, product_alpha=product_alpha, product_rgb=product_rgb,
                    control_image=control_image, product_rgba=product_rgba, box=box, spec=spec)


def paste_back(generated: np.ndarray, canvas: AdCanvas) -> np.ndarray:
    """Composite the original product over generated images with its undilated alpha.

    ``generated``: uint8 [H, W, 3] or [N, H, W, 3]; returns the same shape, uint8. Pixels with
    alpha 255 equal ``canvas.product_rgb`` exactly, pixels with alpha 0 equal ``generated``.
    """
    expected = canvas.product_rgb.shape
    if not isinstance(generated, np.ndarray) or generated.dtype != np.uint8:
        raise ValueError(f"generated: expected a uint8 numpy array, got {getattr(generated, 'dtype', type(generated))}")
    if generated.ndim not in (3, 4) or generated.shape[-3:] != expected:
        raise ValueError(f"generated: expected shape {list(expected)} or [N, *{list(expected)}], "
                         f"got {list(generated.shape)}")
    return _composite(canvas.product_rgb, canvas.product_alpha, generated)
