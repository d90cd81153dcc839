"""The oracle (the miniature world's annotator) and the canvas-placed scenes it is validated on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from rfad.canvas import load_ad_image, paste_back, prepare_canvas
from rfad.contract import CLASS_NAMES
from rfad.trainer.data.cli import main as data_cli
from rfad.trainer.data.manifest import read_manifest
from rfad.miniworld.oracle import HALLUCINATION, INDISTINCT, SIZE, SPACE, label_ad
from rfad.trainer.data.oracle_check import measure_agreement
from rfad.miniworld.canvas import MINIWORLD_CANVAS
from rfad.trainer.data.scenes import draw_scene, write_scene_dataset


@pytest.mark.parametrize("source, n_per_class", [("scenes", 60), ("synth", 40)])
def test_oracle_agrees_with_the_constructed_labels(source, n_per_class):
    """>= 95 % per class on a seeded sample the docs' run did not use (seed 123)."""
    agreement = measure_agreement(source, n_per_class, seed=123)
    assert agreement.confusion.sum() == n_per_class * len(CLASS_NAMES)
    low = {name: share for name, share in agreement.per_class().items() if share < 0.95}
    assert not low, (low, agreement.misses)


def test_oracle_and_scenes_run_without_torch():
    """Blocking torch makes any import of it fail: the oracle, the scenes and the check never need it."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from rfad.miniworld.oracle import label_ad\n"
        "from rfad.trainer.data.scenes import draw_scene\n"
        "scene = draw_scene('Available', np.random.default_rng(0))\n"
        "print(label_ad(scene.image, scene.canvas.product_rgba, scene.canvas.product_alpha).label)\n"
        "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["Available", "[]"]


@pytest.fixture(scope="module")
def plain_scene():
    """An Available scene without a reference object (the edits below add what each rule looks for)."""
    for j in range(50):
        scene = draw_scene("Available", np.random.default_rng([7, j]))
        if scene.params["reference"] is None:
            return scene
    raise AssertionError("no Available scene without a reference object in 50 draws")


def _judge(scene, background):
    image = paste_back(np.ascontiguousarray(background), scene.canvas)
    return label_ad(image, scene.canvas.product_rgba, scene.canvas.product_alpha)


def _far_colour(*colours) -> tuple[int, int, int]:
    corners = [(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)]
    return max(corners, key=lambda c: min(np.linalg.norm(np.subtract(c, other)) for other in colours))


def test_each_rule_fires_on_the_background_edit_it_measures(plain_scene):
    scene, canvas = plain_scene, plain_scene.canvas
    params = scene.params
    left, top, right, base = params["product_box"]
    colour = tuple(int(c) for c in np.median(canvas.product_rgba[canvas.product_rgba[..., 3] > 127][:, :3], axis=0))
    untouched = _judge(scene, scene.image)
    assert untouched.label == "Available" and untouched.fired == (), untouched.explain()

    same_colour = scene.image.copy()
    same_colour[:] = colour
    verdict = _judge(scene, same_colour)
    assert verdict.label == INDISTINCT and verdict.measurements["ring_near_fraction"] > 0.9, verdict.explain()

    blob = scene.image.copy()
    middle = (top + base) // 2
    blob[middle - 8:middle + 8, right - 4:right + 10] = colour
    verdict = _judge(scene, blob)
    assert verdict.fired == (HALLUCINATION,), verdict.explain()
    assert "Shape Hallucination: hallucinated_area" in verdict.explain() and "-> fires" in verdict.explain()

    no_table = scene.image.copy()
    no_table[params["line_row"] - 3:] = scene.image[params["line_row"] - 4, 0]  # the wall, continued
    verdict = _judge(scene, no_table)
    assert verdict.fired == (SPACE,) and verdict.measurements["support_lines"] == [], verdict.explain()

    far = _far_colour(colour, params["wall_rgb"], params["table_rgb"])
    height = base - top + 1
    for tall, expected in ((int(0.6 * height), ()), (int(1.45 * height), (SIZE,))):
        beside = scene.image.copy()
        beside[base - tall + 1:base + 1, right + 8:right + 20] = far
        verdict = _judge(scene, beside)
        assert verdict.fired == expected, verdict.explain()
        assert verdict.measurements["reference_ratios"] == [pytest.approx(tall / height, abs=0.02)]


def test_a_reference_joined_to_the_product_by_blur_is_read_and_a_shadow_under_it_is_not(plain_scene):
    """A decoder smears the few pixels between a reference object and the product: the object is cut off
    at the product's band and still measured. A dark patch under the product (its shadow) stands over
    the product's columns, so it is not read as a small reference."""
    scene, params = plain_scene, plain_scene.params
    left, top, right, base = params["product_box"]
    colour = np.median(scene.canvas.product_rgba[scene.canvas.product_rgba[..., 3] > 127][:, :3], axis=0)
    far = _far_colour(colour, params["wall_rgb"], params["table_rgb"])
    height = base - top + 1
    tall = int(0.15 * height)
    joined = scene.image.copy()
    joined[base - tall + 1:base + 1, right + 6:right + 14] = far
    joined[base - 2:base + 1, right - 2:right + 6] = far  # the smear that joins it to the product
    verdict = _judge(scene, joined)
    assert verdict.fired == (SIZE,), verdict.explain()
    assert verdict.measurements["reference_ratios"] == [pytest.approx(tall / height, abs=0.02)]

    shadow = scene.image.copy()
    shadow[base + 3:base + 7, left + 4:right - 4] = (scene.image[base + 3:base + 7, left + 4:right - 4] * 0.4).astype(np.uint8)
    verdict = _judge(scene, shadow)
    assert verdict.measurements["reference_ratios"] == [] and SIZE not in verdict.fired, verdict.explain()


def test_oracle_refuses_bad_inputs_naming_the_argument(plain_scene):
    canvas, image = plain_scene.canvas, plain_scene.image
    with pytest.raises(ValueError, match="^image: expected a uint8 array"):
        label_ad(image.astype(np.float32), canvas.product_rgba, canvas.product_alpha)
    with pytest.raises(ValueError, match="^product: expected a uint8 array"):
        label_ad(image, canvas.product_rgba[..., :3], canvas.product_alpha)
    with pytest.raises(ValueError, match=r"^placement: expected a uint8 alpha array \[128, 128\]"):
        label_ad(image, canvas.product_rgba, canvas.product_alpha[:64])
    with pytest.raises(ValueError, match="^placement: no pixel with alpha > 127"):
        label_ad(image, canvas.product_rgba, np.zeros_like(canvas.product_alpha))
    transparent = canvas.product_rgba.copy()
    transparent[..., 3] = 0
    with pytest.raises(ValueError, match="^product: no opaque pixel"):
        label_ad(image, transparent, canvas.product_alpha)


def test_scenes_place_the_product_like_the_canvas_at_a_fixed_scale():
    for c, label in enumerate(CLASS_NAMES):
        scene = draw_scene(label, np.random.default_rng([11, c]))
        alpha = scene.canvas.product_alpha
        rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
        # The larger side fills product_scale of the canvas, centred; the product is pasted back exactly.
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == int(MINIWORLD_CANVAS.product_scale * 128)
        assert abs((rows[0] + rows[-1]) / 2 - 63.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 63.5) <= 1
        solid = alpha == 255
        assert (scene.image[solid] == scene.canvas.product_rgb[solid]).all()


def test_rfad_data_scenes_writes_files_the_oracle_labels_alike(tmp_path):
    result = CliRunner().invoke(data_cli, ["scenes", "--out", str(tmp_path / "s"), "--n", "10", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote 10 scenes" in result.output and "Shape Hallucination" in result.output
    rows = read_manifest(tmp_path / "s" / "manifest.jsonl", strict_labels=True)
    scenes = [json.loads(line) for line in (tmp_path / "s" / "scenes.jsonl").read_text().splitlines()]
    assert [s["id"] for s in scenes] == [row.id for row in rows]
    assert sorted(row.label for row in rows) == sorted(CLASS_NAMES * 2)
    for row, scene in zip(rows, scenes):
        assert scene["label"] == row.label and scene["params"]["variant"]
        # What a later stage reads back from disk: the cut-out placed again by the canvas, the PNG ad.
        canvas = prepare_canvas(tmp_path / "s" / row.product, MINIWORLD_CANVAS)
        image = load_ad_image(tmp_path / "s" / row.generated)
        assert label_ad(image, canvas.product_rgba, canvas.product_alpha).label == row.label
    again = write_scene_dataset(tmp_path / "again", 10, seed=4).parent
    for row in rows:
        assert (again / row.generated).read_bytes() == (tmp_path / "s" / row.generated).read_bytes()
