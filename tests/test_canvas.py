"""rfad.canvas: placing a product cut-out on the ad canvas, and refusing bad product images."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from rfad.canvas import (
    AdCanvas,
    CanvasError,
    CanvasSpec,
    load_product_image,
    paste_back,
    ad_image_rows,
    load_ad_image,
    place_product,
    placed_rows,
    prepare_canvas,
)

RNG_SEED = 1234


def cutout(width: int, height: int, box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """uint8 [height, width, 4]: random opaque colours inside ``box`` (l, t, r, b), transparent outside."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 4), np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right, :3] = rng.integers(0, 256, (bottom - top, right - left, 3))
    pixels[top:bottom, left:right, 3] = 255
    return pixels


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def png_header(width: int, height: int) -> bytes:
    """A ~100-byte RGBA PNG whose header claims ``width`` x ``height``: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def assert_valid_canvas(canvas: AdCanvas) -> None:
    height, width = canvas.spec.height, canvas.spec.width
    for name, shape in [("init_image", (height, width, 3)), ("mask", (height, width)),
                        ("product_alpha", (height, width)), ("product_rgb", (height, width, 3)),
                        ("control_image", (height, width, 3))]:
        array = getattr(canvas, name)
        assert array.dtype == np.uint8 and array.shape == shape, name
    left, top, right, bottom = canvas.box
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    assert canvas.product_rgba.shape == (bottom - top, right - left, 4)


# --- placement --------------------------------------------------------------------------------

def test_product_is_cropped_to_its_alpha_and_centred_without_resizing():
    pixels = cutout(100, 100, (30, 40, 70, 60))
    canvas = prepare_canvas(Image.fromarray(pixels))

    assert canvas.box == (236, 246, 276, 266)
    inside = np.zeros((512, 512), bool)
    inside[246:266, 236:276] = True
    assert np.array_equal(canvas.product_alpha > 0, inside)
    assert np.array_equal(canvas.product_rgb[inside].reshape(20, 40, 3), pixels[40:60, 30:70, :3])
    assert not canvas.product_rgb[~inside].any()
    assert np.array_equal(canvas.product_rgba, pixels[40:60, 30:70])
    # init image: the product over the (white) background
    assert np.array_equal(canvas.init_image[inside], canvas.product_rgb[inside])
    assert (canvas.init_image[~inside] == 255).all()
    assert_valid_canvas(canvas)


def test_large_product_is_shrunk_to_product_scale_keeping_aspect():
    canvas = prepare_canvas(Image.fromarray(cutout(1000, 520, (0, 10, 1000, 510))), CanvasSpec(product_scale=0.75))
    assert canvas.product_rgba.shape == (192, 384, 4)
    assert canvas.box == (64, 160, 448, 352)
    assert np.count_nonzero(canvas.product_alpha) > 0.95 * 384 * 192


@pytest.mark.parametrize("upscale, size", [(True, (192, 384)), (False, (20, 40))])
def test_small_product_is_enlarged_only_with_upscale(upscale, size):
    canvas = prepare_canvas(Image.fromarray(cutout(100, 100, (30, 40, 70, 60))), CanvasSpec(upscale=upscale))
    assert canvas.product_rgba.shape[:2] == size


def test_non_square_canvas():
    spec = CanvasSpec(width=768, height=512)
    canvas = prepare_canvas(Image.fromarray(cutout(1000, 520, (0, 10, 1000, 510))), spec)
    # The box is 576 x 384; width is the binding side: 1000 * 0.576 = 576, 500 * 0.576 = 288.
    assert canvas.box == (96, 112, 672, 400)
    assert canvas.mask.shape == (512, 768) and canvas.init_image.shape == (512, 768, 3)
    assert_valid_canvas(canvas)


# --- mask -------------------------------------------------------------------------------------

def test_mask_is_inverted_alpha_dilated_by_the_kernel():
    k = 20
    canvas = prepare_canvas(Image.fromarray(cutout(200, 200, (50, 70, 150, 130))), CanvasSpec(mask_dilation=k))
    left, top, right, bottom = canvas.box  # (206, 226, 306, 286): a 100 x 60 product
    # OpenCV anchors an even kernel at k // 2: the window at x spans x - k//2 .. x + k - 1 - k//2.
    # The mask is 0 only where that whole window lies on the product.
    keep = np.zeros((512, 512), bool)
    keep[top + k // 2:bottom - (k - 1 - k // 2), left + k // 2:right - (k - 1 - k // 2)] = True
    assert np.array_equal(canvas.mask == 0, keep)
    assert np.array_equal(canvas.mask == 255, ~keep)
    row = (top + bottom) // 2
    assert canvas.mask[row, left - 1] == 255      # just outside the product
    assert canvas.mask[row, left + 5] == 255      # on the product, within the dilated margin
    assert canvas.mask[row, left + k // 2] == 0   # first kept column
    assert canvas.mask[row, (left + right) // 2] == 0
    assert canvas.mask[0, 0] == 255 and canvas.mask[511, 511] == 255


def test_undilated_mask_is_exactly_inverted_alpha():
    pixels = cutout(100, 100, (30, 30, 70, 70))
    pixels[30:70, 30, 3] = 100  # a soft edge column
    canvas = prepare_canvas(Image.fromarray(pixels), CanvasSpec(mask_dilation=0))
    assert np.array_equal(canvas.mask, 255 - canvas.product_alpha)
    assert canvas.mask[256, canvas.box[0]] == 155


# --- control image ----------------------------------------------------------------------------

def test_control_image_has_edges_only_at_the_product():
    pixels = cutout(100, 100, (20, 20, 80, 80))
    pixels[20:80, 20:80, :3] = 200
    pixels[45:55, 20:80, :3] = 30  # a dark stripe: an inner edge
    canvas = prepare_canvas(Image.fromarray(pixels))
    control = canvas.control_image
    assert control.dtype == np.uint8 and control.shape == (512, 512, 3)
    assert np.array_equal(control[..., 0], control[..., 1]) and np.array_equal(control[..., 0], control[..., 2])
    assert set(np.unique(control)) == {0, 255}
    left, top, right, bottom = canvas.box
    near = np.zeros((512, 512), bool)
    near[top - 2:bottom + 2, left - 2:right + 2] = True
    assert not control[~near].any()
    assert control[top - 1:top + 1, left + 10:right - 10, 0].any(axis=0).all()  # the silhouette's top edge
    assert control[top + 24:top + 27, (left + right) // 2, 0].any()             # the stripe's edge


def test_control_image_ignores_the_background_colour():
    image = Image.fromarray(cutout(100, 100, (20, 20, 80, 80)))
    white = prepare_canvas(image, CanvasSpec(background=(255, 255, 255)))
    black = prepare_canvas(image, CanvasSpec(background=(0, 0, 0)))
    assert np.array_equal(white.control_image, black.control_image)
    assert not np.array_equal(white.init_image, black.init_image)


# --- paste back -------------------------------------------------------------------------------

@pytest.fixture
def soft_canvas():
    pixels = cutout(100, 100, (30, 30, 70, 70))
    pixels[30:70, 30, 3] = 128  # soft left edge
    return prepare_canvas(Image.fromarray(pixels), CanvasSpec(width=128, height=128))


def test_paste_back_keeps_product_and_generated_pixels_exactly(soft_canvas):
    generated = np.random.default_rng(RNG_SEED).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = paste_back(generated, soft_canvas)
    alpha = soft_canvas.product_alpha
    assert out.dtype == np.uint8 and out.shape == generated.shape
    assert np.array_equal(out[alpha == 255], soft_canvas.product_rgb[alpha == 255])
    assert np.array_equal(out[alpha == 0], generated[alpha == 0])

    y, x = 64, soft_canvas.box[0]
    assert alpha[y, x] == 128
    for c in range(3):
        p, g = int(soft_canvas.product_rgb[y, x, c]), int(generated[y, x, c])
        assert out[y, x, c] == (p * 128 + g * 127 + 127) // 255
        assert soft_canvas.init_image[y, x, c] == (p * 128 + 255 * 127 + 127) // 255


def test_paste_back_on_a_batch(soft_canvas):
    generated = np.random.default_rng(RNG_SEED).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    out = paste_back(generated, soft_canvas)
    assert out.shape == (3, 128, 128, 3) and out.dtype == np.uint8
    for i in range(3):
        assert np.array_equal(out[i], paste_back(generated[i], soft_canvas))


def test_compositing_is_exact_rounding_for_every_alpha_and_colour():
    """All 256^3 (front, back, alpha) triples: (f*a + b*(255-a) + 127) // 255, as the docs state."""
    values = np.arange(256, dtype=np.int64)
    front, back = np.meshgrid(values, values, indexing="ij")
    pixels = np.zeros((256, 256, 4), np.uint8)
    canvas = prepare_canvas(Image.fromarray(cutout(64, 64, (8, 8, 56, 56))), CanvasSpec(width=256, height=256))
    for alpha in range(256):
        pixels[..., :3] = front[..., None]
        pixels[..., 3] = alpha
        soft = replace(canvas, product_rgb=pixels[..., :3].copy(), product_alpha=pixels[..., 3].copy())
        out = paste_back(np.repeat(back[..., None], 3, axis=2).astype(np.uint8), soft)
        expected = (front * alpha + back * (255 - alpha) + 127) // 255
        assert np.array_equal(out[..., 0], expected), alpha


@pytest.mark.parametrize("spec", [CanvasSpec(width=128, height=128), CanvasSpec(width=200, height=96),
                                  CanvasSpec(width=64, height=64, background=(10, 200, 30))])
def test_place_product_is_the_canvas_init_image(spec):
    pixels = cutout(90, 70, (10, 5, 80, 60), seed=3)
    pixels[5:60, 10, 3] = 77  # a soft edge, so partial alpha is composited too
    source = Image.fromarray(pixels)
    assert np.array_equal(place_product(source, spec), prepare_canvas(source, spec).init_image)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16"])
def test_ad_image_rows_read_the_decoded_pixels_of_any_mode(mode):
    """The judge reads ads by rows (rfad.serving.judge_io): any rows, in runs or not, are the rows of
    the whole decoded image, for every mode an ad arrives in."""
    rng = np.random.default_rng(RNG_SEED)
    rgb = Image.fromarray(rng.integers(0, 256, (300, 170, 3), dtype=np.uint8))
    image = {"RGBA": rgb.convert("RGBA"), "P": rgb.convert("P"), "L": rgb.convert("L"),
             "I;16": Image.fromarray(rng.integers(0, 2**16, (300, 170), dtype=np.uint16))}.get(mode, rgb)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    whole = load_ad_image(data)
    rows = np.array([0, 1, 2, 7, 8, 150, 298, 299])
    with ad_image_rows(data) as (width, height, read_rows):
        assert (width, height) == (170, 300)
        assert np.array_equal(read_rows(rows), whole[rows])
        assert np.array_equal(read_rows(np.arange(height)), whole)
    with pytest.raises(ValueError, match="closed"):  # the pixels are freed on leaving the block
        read_rows(rows)


def test_placed_rows_are_the_rows_of_the_placed_product():
    pixels = cutout(90, 70, (10, 5, 80, 60), seed=3)
    spec = CanvasSpec(width=200, height=96, background=(10, 200, 30))
    width, height, read_rows = placed_rows(Image.fromarray(pixels), spec)
    rows = np.array([0, 5, 6, 40, 41, 95])  # outside, across and inside the product's box
    assert (width, height) == (200, 96)
    assert np.array_equal(read_rows(rows), place_product(Image.fromarray(pixels), spec)[rows])


def test_place_product_composites_a_tall_product_exactly_band_by_band():
    """A product taller than the compositing bands: every pixel is (rgb*a + bg*(255-a) + 127) // 255."""
    rng = np.random.default_rng(RNG_SEED)
    pixels = np.zeros((700, 420, 4), np.uint8)
    pixels[..., :3] = rng.integers(0, 256, (700, 420, 3))
    pixels[..., 3] = rng.integers(1, 256, (700, 420))  # soft everywhere inside the bbox
    pixels[0, :, 3] = 0  # a transparent top row: the product is cropped to its alpha first
    spec = CanvasSpec(width=640, height=800, product_scale=1.0, background=(200, 100, 50))
    canvas = prepare_canvas(Image.fromarray(pixels), spec)
    placed = place_product(Image.fromarray(pixels), spec)
    a = canvas.product_alpha.astype(np.int64)[..., None]
    expected = (canvas.product_rgb.astype(np.int64) * a + np.array(spec.background) * (255 - a) + 127) // 255
    assert canvas.box[3] - canvas.box[1] == 699  # taller than one band of rows
    assert np.array_equal(placed, expected.astype(np.uint8))


@pytest.mark.parametrize("generated", [np.zeros((64, 64, 3), np.uint8), np.zeros((128, 128, 3), np.float32),
                                       np.zeros((128, 128), np.uint8)])
def test_paste_back_refuses_wrong_images(soft_canvas, generated):
    with pytest.raises(ValueError, match="generated"):
        paste_back(generated, soft_canvas)


# --- sources ----------------------------------------------------------------------------------

PIXELS = cutout(64, 48, (10, 8, 50, 40), seed=3)


def _palette_png() -> bytes:
    image = Image.new("P", (64, 48), 0)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.paste(1, (10, 8, 50, 40))
    return encode(image, transparency=0)


@pytest.mark.parametrize("make_source", [
    pytest.param(lambda tmp: Image.fromarray(PIXELS), id="pil"),
    pytest.param(lambda tmp: encode(Image.fromarray(PIXELS)), id="png-bytes"),
    pytest.param(lambda tmp: encode(Image.fromarray(PIXELS), "WEBP", lossless=True, exact=True), id="webp-bytes"),
    pytest.param(lambda tmp: _write(tmp / "p.png", encode(Image.fromarray(PIXELS))), id="pathlib"),
    pytest.param(lambda tmp: str(_write(tmp / "p.png", encode(Image.fromarray(PIXELS)))), id="str-path"),
])
def test_every_source_kind_gives_the_same_canvas(tmp_path, make_source):
    reference = prepare_canvas(Image.fromarray(PIXELS), CanvasSpec(width=128, height=128))
    canvas = prepare_canvas(make_source(tmp_path), CanvasSpec(width=128, height=128))
    for name in ("init_image", "mask", "product_alpha", "product_rgb", "control_image", "product_rgba"):
        assert np.array_equal(getattr(canvas, name), getattr(reference, name)), name
    assert canvas.box == reference.box


def test_palette_and_grey_alpha_images_are_accepted():
    palette = prepare_canvas(_palette_png(), CanvasSpec(width=128, height=128))
    assert palette.product_rgba.shape == (32, 40, 4)
    assert (palette.product_rgba == (200, 30, 30, 255)).all()

    la = Image.fromarray(PIXELS).convert("LA")
    assert load_product_image(encode(la)).mode == "RGBA"
    canvas = prepare_canvas(encode(la), CanvasSpec(width=128, height=128))
    assert np.array_equal(canvas.product_alpha, prepare_canvas(Image.fromarray(PIXELS),
                                                               CanvasSpec(width=128, height=128)).product_alpha)


def test_load_product_image_returns_a_detached_rgba_image(tmp_path):
    path = _write(tmp_path / "p.png", encode(Image.fromarray(PIXELS)))
    image = load_product_image(path)
    path.unlink()  # the file must already be read and closed
    assert image.mode == "RGBA" and np.array_equal(np.asarray(image), PIXELS)


# --- bad product images -----------------------------------------------------------------------

def _opaque():
    return Image.fromarray(np.full((40, 40, 4), 255, np.uint8))


BAD_SOURCES = [
    pytest.param(lambda tmp: np.random.default_rng(0).bytes(500), None, ["not an image"], id="random-bytes"),
    pytest.param(lambda tmp: b"", None, ["empty"], id="empty-bytes"),
    pytest.param(lambda tmp: _write(tmp / "notes.txt", b"hello, not an image\n"), None, ["notes.txt", "not an image"],
                 id="text-file"),
    pytest.param(lambda tmp: tmp / "missing.png", None, ["no such file", "missing.png"], id="missing-path"),
    pytest.param(lambda tmp: tmp, None, ["no such file"], id="directory"),
    pytest.param(lambda tmp: 42, None, ["int"], id="int"),
    pytest.param(lambda tmp: Image.new("RGB", (40, 40)), None, ["no alpha channel", "'RGB'"], id="rgb"),
    pytest.param(lambda tmp: encode(Image.new("L", (40, 40))), None, ["alpha", "'L'"], id="grey-png"),
    pytest.param(lambda tmp: encode(Image.new("CMYK", (40, 40)), "TIFF"), None, ["alpha", "'CMYK'"], id="cmyk"),
    pytest.param(lambda tmp: encode(Image.new("I;16", (40, 40))), None, ["alpha", "I;16"], id="16-bit"),
    pytest.param(lambda tmp: encode(Image.new("RGB", (40, 40)), "JPEG"), None, ["alpha"], id="jpeg"),
    pytest.param(lambda tmp: Image.new("RGBA", (40, 40)), None, ["fully transparent", "nothing to place"],
                 id="transparent"),
    pytest.param(lambda tmp: _opaque(), None, ["no transparent pixels", "cut-out"], id="opaque"),
    pytest.param(lambda tmp: Image.fromarray(cutout(10, 40, (0, 0, 5, 40))), None, ["10x40", "16 px"],
                 id="tiny-image"),
    pytest.param(lambda tmp: Image.fromarray(cutout(100, 100, (10, 10, 18, 40))), None, ["8x30", "16 px"],
                 id="tiny-product"),
    pytest.param(lambda tmp: Image.fromarray(PIXELS), CanvasSpec(max_pixels=3000), ["64x48", "3072", "3000"],
                 id="over-spec-limit"),
    # the header claims 25 Mpx, over the default 4096^2 limit; the pixel data is missing, so only a
    # check made before decoding can give this message
    pytest.param(lambda tmp: png_header(5000, 5000), None, ["5000x5000", "16777216"], id="bomb-header"),
    # 400 Mpx: PIL's own guard refuses it while opening
    pytest.param(lambda tmp: png_header(20000, 20000), None, ["too many pixels", "16777216"], id="bomb-pil"),
    pytest.param(lambda tmp: encode(Image.fromarray(cutout(64, 64, (0, 0, 32, 32))))[:300], None,
                 ["truncated"], id="truncated"),
]


@pytest.mark.parametrize("make_source, spec, words", BAD_SOURCES)
def test_bad_product_images_raise_canvas_error(tmp_path, make_source, spec, words):
    with pytest.raises(CanvasError) as info:
        prepare_canvas(make_source(tmp_path), spec or CanvasSpec())
    message = str(info.value)
    assert message.startswith("product image:")
    for word in words:
        assert word in message


def test_a_bit_image_of_huge_declared_size_is_refused_before_decoding():
    data = encode(Image.new("1", (6000, 6000)))  # 36 Mpx, 4.5 MB in memory, a few kB as PNG
    assert len(data) < 100_000
    with pytest.raises(CanvasError, match="6000x6000 = 36000000 px is over the limit of 16777216"):
        load_product_image(data)


def test_decompression_bomb_warning_as_error_is_a_canvas_error():
    # 100 Mpx is between PIL's warning (89 Mpx) and error (179 Mpx) limits.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(CanvasError, match="too many pixels"):
            load_product_image(png_header(10000, 10000), max_pixels=200_000_000)


@pytest.mark.parametrize("field, value", [
    ("width", 100), ("width", 56), ("height", 0), ("width", 512.0), ("product_scale", 0), ("product_scale", 1.5),
    ("upscale", 1), ("mask_dilation", -1), ("canny_low", 300), ("min_side", 0), ("max_pixels", 10),
    ("background", (0, 0)), ("background", (0, 0, 256)),
])
def test_canvas_spec_validates_its_fields(field, value):
    with pytest.raises(ValueError, match=field):
        CanvasSpec(**{field: value})


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ_SPEC = CanvasSpec(width=64, height=64, mask_dilation=4)


def _canvas_or_canvas_error(data: bytes) -> None:
    try:
        canvas = prepare_canvas(data, FUZZ_SPEC)
    except CanvasError:
        return
    assert_valid_canvas(canvas)


def _fuzz_seeds() -> list[bytes]:
    product = Image.fromarray(cutout(32, 32, (4, 4, 28, 28), seed=7))
    return [encode(product), encode(product, "WEBP", lossless=True), encode(Image.open(io.BytesIO(_palette_png())), "GIF", transparency=0),
            encode(product, "TIFF")]


def test_corrupted_images_raise_only_canvas_error():
    rng = np.random.default_rng(RNG_SEED)
    for seed in _fuzz_seeds():
        _canvas_or_canvas_error(seed)
        for _ in range(40):
            data = bytearray(seed)
            if rng.random() < 0.3:
                data = data[:rng.integers(0, len(data))]
            else:
                for at in rng.integers(0, len(data), rng.integers(1, 8)):
                    data[at] = rng.integers(0, 256)
            _canvas_or_canvas_error(bytes(data))


def test_random_bytes_raise_only_canvas_error():
    hypothesis = pytest.importorskip("hypothesis")
    strategies = pytest.importorskip("hypothesis.strategies")
    header = strategies.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBPVP8L", b"GIF89a", b"II*\0"])

    @hypothesis.settings(max_examples=50, deadline=None)
    @hypothesis.given(header, strategies.binary(max_size=1024))
    def check(prefix, body):
        _canvas_or_canvas_error(prefix + body)

    check()
