"""What catches a tuned generator cheating: prompt fidelity read back from the image, diversity across
seeds and across products (rfad.trainer.data.fidelity, rfad.trainer.rfft.measures)."""

from __future__ import annotations

import numpy as np
import pytest

from rfad.contract import CLASS_NAMES
from rfad.trainer.api import (cross_pair_distances, cross_product_distance, draw_scene, fidelity_shares, read_fidelity,
                              seed_distance)
from rfad.trainer.data.fidelity import parse_prompt
from rfad.trainer.data.scenes import WALLS, lit


@pytest.fixture(scope="module")
def scenes():
    """120 drawn scenes of the standard class mix, from a seed stream no other test reads."""
    return [draw_scene(CLASS_NAMES[i % len(CLASS_NAMES)], np.random.default_rng([41, i])) for i in range(120)]


def _readings(scenes, prompts):
    return [read_fidelity(s.image, np.asarray(s.canvas.product_rgba), s.canvas.product_alpha, prompt)
            for s, prompt in zip(scenes, prompts)]


def test_drawn_scenes_show_what_their_prompt_names(scenes):
    shares = fidelity_shares(_readings(scenes, [s.prompt for s in scenes]))
    assert shares["faithful"]["n"] == len(scenes)
    assert shares["reference"]["n"] > 30 and shares["table"]["n"] > 80  # both are named often enough to test
    low = {name: r["share"] for name, r in shares.items() if r["share"] < 0.95}
    assert not low, shares


def test_another_scene_s_prompt_is_not_read_back(scenes):
    """The same images given their neighbour's prompt: the wall and table it names are not there."""
    shares = fidelity_shares(_readings(scenes, [s.prompt for s in scenes[1:] + scenes[:1]]))
    assert shares["wall"]["share"] < 0.2 and shares["table"]["share"] < 0.25
    assert shares["faithful"]["share"] < 0.1, shares


def test_a_repainted_wall_is_read_as_the_new_colour():
    """One scene, its wall rows painted in another palette wall's drawn colour: the wall no longer matches."""
    scene = draw_scene("Available", np.random.default_rng([41, 5000]))
    names = parse_prompt(scene.prompt)
    other = "navy" if names.wall != "navy" else "mint"
    image = scene.image.copy()
    top = int(np.flatnonzero((scene.canvas.product_alpha > 127).any(axis=1))[0])
    image[:top] = lit(WALLS[other], names.light)
    reading = read_fidelity(image, np.asarray(scene.canvas.product_rgba), scene.canvas.product_alpha, scene.prompt)
    assert reading["wall_read"] == other and reading["wall"] is False and reading["faithful"] is False


def test_a_prompt_the_world_does_not_write_is_refused():
    with pytest.raises(ValueError, match="prompt: not a miniature-world prompt"):
        parse_prompt("a bottle on a table")
    names = parse_prompt("a perfume in front of a charcoal wall with a walnut shelf, dim light, 8k photo")
    assert (names.wall, names.table, names.light, names.reference) == ("charcoal", None, "dim light", None)


def test_seed_distance_is_zero_for_repeats_and_reads_only_the_background():
    background = np.zeros((8, 8), bool)
    background[:, :4] = True
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[:, 4:] = 255  # differs only where the product is
    assert seed_distance([a, b], background) == 0.0
    b[:, :4] = 51
    assert seed_distance([a, b, a], background) == pytest.approx((0.2 + 0.2 + 0.0) / 3)


def test_cross_product_distance_compares_the_background_both_products_share():
    """One background painted for every product scores 0 whatever the products; a pixel where either
    product stands is not compared."""
    same = np.full((8, 8, 3), 90, np.uint8)
    left, right = np.ones((8, 8), bool), np.ones((8, 8), bool)
    left[:, :2], right[:, 6:] = False, False
    assert cross_product_distance([same, same.copy(), same.copy()], [left, right, left]) == 0.0
    other = same.copy()
    other[:, :2] = 0  # only where the first product stands
    assert cross_product_distance([same, other], [left, right]) == 0.0
    other[:, 2:6] = 90 + 51
    assert cross_product_distance([same, other], [left, right]) == pytest.approx(0.2)
    assert cross_product_distance([same], [left]) is None
    with pytest.raises(ValueError, match="one background per image"):
        cross_product_distance([same, other], [left])


def test_cross_pair_distances_hold_every_pair_once_each_way():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
    backgrounds = [np.ones((8, 8), bool)] * 3 + [np.zeros((8, 8), bool)]  # the last shares no background
    matrix = cross_pair_distances(images, backgrounds)
    assert np.isnan(np.diag(matrix)).all() and np.isnan(matrix[3, :3]).all()
    np.testing.assert_array_equal(matrix, matrix.T)
    assert matrix[0, 1] == pytest.approx(np.abs(images[0].astype(float) - images[1]).mean() / 255)
    assert np.nanmean(matrix[:3, :3]) == pytest.approx(cross_product_distance(images[:3], backgrounds[:3]))


def test_cross_product_distance_draws_the_same_pairs_for_every_model():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(12)]
    backgrounds = [np.ones((8, 8), bool)] * 12
    sampled = cross_product_distance(images, backgrounds, max_pairs=10)
    assert sampled == cross_product_distance(images, backgrounds, max_pairs=10)
    assert sampled != pytest.approx(cross_product_distance(images, backgrounds), abs=1e-9)


def test_fidelity_shares_count_only_the_images_naming_an_attribute():
    readings = [{"wall": True, "table": None, "reference": True, "faithful": True},
                {"wall": False, "table": True, "reference": None, "faithful": False}]
    shares = fidelity_shares(readings)
    assert shares["wall"] == {"share": 0.5, "n": 2} and shares["table"] == {"share": 1.0, "n": 1}
    assert shares["reference"] == {"share": 1.0, "n": 1} and shares["faithful"] == {"share": 0.5, "n": 2}
