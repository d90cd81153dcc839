"""The shipped miniature-world generator: present, hashing as its training record says, loadable by every
``--models`` command, painting scenes (not noise) through the real loop; and RF-mini written from it."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rfad.contract import CLASS_NAMES
from rfad.miniworld import file_hashes, model_dir, training_record
from rfad.trainer.miniworld.config import MiniworldTrainConfig


def test_shipped_weights_hash_as_recorded_and_stay_small():
    record = training_record()
    assert file_hashes(model_dir()) == record["files"]
    assert {"sd15/unet/diffusion_pytorch_model.safetensors", "sd15/vae/diffusion_pytorch_model.safetensors",
            "sd15/text_encoder/model.safetensors", "controlnet/diffusion_pytorch_model.safetensors"} <= set(record["files"])
    assert sum(f["bytes"] for f in record["files"].values()) < 20e6
    assert record["command"][1] == "miniworld"
    # `rfad-train miniworld`'s defaults are the shipped generator's settings (the docs say so).
    defaults = {f.name: f.default for f in fields(MiniworldTrainConfig) if f.default is not MISSING}
    machine_only = {"out", "threads", "stop_after"}
    assert {k: v for k, v in record["settings"].items() if k in defaults and k not in machine_only} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items() if k not in machine_only}


def test_model_dir_is_torch_free_and_a_model_set():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; import rfad.miniworld as m; "
            "from rfad.models.model_set import ModelSet; s = ModelSet.resolve(m.model_dir()); print(s.sd.name, s.controlnet.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["sd15", "controlnet"]


@pytest.fixture(scope="module")
def runner():
    from rfad.trainer.data.miniworld import load_generator

    return load_generator(None)[0]


def _row_spread(image: np.ndarray, canvas) -> float:
    """Median over background pixels of the distance to their row's median colour: a scene's walls and tables
    change down the image, not across it; noise changes everywhere."""
    free = canvas.mask == 255
    pixels = image.astype(np.float32)
    spreads = []
    for y in range(image.shape[0]):
        row = pixels[y][free[y]]
        if len(row) > 8:
            spreads.append(np.median(np.linalg.norm(row - np.median(row, axis=0), axis=1)))
    return float(np.median(spreads))


def test_shipped_generator_paints_scenes_through_the_real_loop(runner, tiny_zoo):
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.trainer.data.miniworld import generate_for_product, product_requests

    scene = product_requests(1, seed=3, available_share=1.0)[0]
    shipped = generate_for_product(runner, scene, 2, 0, steps=8, guidance=7.5)
    random_weights = TorchRunner(load_diffusion_models(ModelSet.resolve(tiny_zoo)))
    noise = generate_for_product(random_weights, scene, 1, 0, steps=8, guidance=7.5)
    solid = scene.canvas.product_alpha == 255
    for _, image, verdict, latents in shipped:
        assert latents.shape == (4, 32, 32)  # factor 4 at 128 px, kept for decoding again
        assert np.array_equal(image[solid], scene.canvas.product_rgb[solid])
        assert verdict.label in CLASS_NAMES
        # A recognisable scene per the oracle: a table line is painted near where the product stands (within
        # 15 % of the image's height; whether within the Space rule's tolerance is the generator's hit rate).
        lines = verdict.measurements["support_lines"]
        assert lines and min(abs(offset) for offset in lines) < 0.15, verdict.explain()
        assert _row_spread(image, scene.canvas) < 20
    assert _row_spread(noise[0][1], scene.canvas) > 2 * max(_row_spread(image, scene.canvas) for _, image, _, _ in shipped)
    assert not np.array_equal(shipped[0][1], shipped[1][1])  # two seeds, two scenes


def test_rfad_data_miniworld_writes_a_labelled_manifest_split_by_product(tmp_path):
    from rfad.trainer.data.cli import main
    from rfad.trainer.data.fidelity import read_fidelity
    from rfad.trainer.data.manifest import read_manifest
    from rfad.miniworld.oracle import label_ad

    args = ["miniworld", "--n", "7", "--images-per-product", "2", "--steps", "2", "--val-fraction", "0.25",
            "--test-fraction", "0.25"]
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    rows = read_manifest(tmp_path / "a" / "manifest.jsonl", strict_labels=True)
    assert len(rows) == 7 and len({row.product for row in rows}) == 4
    splits_of = {}
    for row in rows:
        splits_of.setdefault(row.product, set()).add(row.split)
    assert all(len(splits) == 1 for splits in splits_of.values())  # a product never crosses splits
    assert sorted(s.pop() for s in splits_of.values()) == ["test", "train", "train", "val"]
    labels = [json.loads(line) for line in (tmp_path / "a" / "labels.jsonl").read_text().splitlines()]
    for row, entry in zip(rows, labels):
        image = np.asarray(Image.open(tmp_path / "a" / row.generated).convert("RGB"))
        product = Image.open(tmp_path / "a" / row.product)
        from rfad.canvas import prepare_canvas
        from rfad.miniworld.canvas import MINIWORLD_CANVAS

        canvas = prepare_canvas(product, MINIWORLD_CANVAS)
        assert label_ad(image, np.asarray(canvas.product_rgba), canvas.product_alpha).label == row.label == entry["label"]
        assert entry["fidelity"] == read_fidelity(image, np.asarray(canvas.product_rgba), canvas.product_alpha,
                                                  row.prompt)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert sum(summary["labels"].values()) == 7 and summary["products"] == 4
    assert summary["generator_record_sha256"] is not None

    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    for row in rows:  # same seed, same images
        assert (tmp_path / "a" / row.generated).read_bytes() == (tmp_path / "b" / row.generated).read_bytes()


def test_rfad_data_miniworld_bad_flags_are_one_line_errors(tmp_path):
    from rfad.trainer.data.cli import main

    result = CliRunner().invoke(main, ["miniworld", "--n", "2", "--out", str(tmp_path / "x"), "--test-fraction", "0.9",
                                       "--val-fraction", "0.2"])
    assert result.exit_code == 1 and "must be >= 0 and sum to less than 1" in result.output
    result = CliRunner().invoke(main, ["miniworld", "--n", "2", "--out", str(tmp_path / "x"), "--models", str(tmp_path)])
    assert result.exit_code == 1 and "rfad-models.json" in result.output


def test_rfad_data_miniworld_shards_and_resumes_to_the_same_dataset(tmp_path):
    """Two shards on one folder write what one process writes; a rerun regenerates only a product whose
    record is missing; other generation flags on the same folder are refused."""
    from rfad.trainer.data.cli import main

    args = ["miniworld", "--n", "6", "--images-per-product", "2", "--steps", "2", "--val-fraction", "0.34",
            "--test-fraction", "0.34"]
    assert CliRunner().invoke(main, args + ["--out", str(tmp_path / "one")]).exit_code == 0
    first = CliRunner().invoke(main, args + ["--out", str(tmp_path / "two"), "--shard", "1/2"])
    assert first.exit_code == 0 and "1 of 3 products" in first.output, first.output
    assert not (tmp_path / "two" / "manifest.jsonl").exists()  # not before every shard is done
    second = CliRunner().invoke(main, args + ["--out", str(tmp_path / "two"), "--shard", "0/2"])
    assert second.exit_code == 0 and "wrote 6 images of 3 products" in second.output, second.output
    for name in ("manifest.jsonl", "labels.jsonl"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    images = sorted(p.name for p in (tmp_path / "one" / "images").iterdir())
    for name in images:
        assert (tmp_path / "one" / "images" / name).read_bytes() == (tmp_path / "two" / "images" / name).read_bytes()

    # Resume: product 1's record is gone (a killed run), its image too; the rest is kept as it is.
    (tmp_path / "two" / "records" / "mini-00001.json").unlink()
    (tmp_path / "two" / "images" / "mini-00001-0.png").unlink()
    kept = (tmp_path / "two" / "images" / "mini-00000-0.png").stat().st_mtime_ns
    again = CliRunner().invoke(main, args + ["--out", str(tmp_path / "two")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "two" / "images" / "mini-00000-0.png").stat().st_mtime_ns == kept
    assert (tmp_path / "one" / "images" / "mini-00001-0.png").read_bytes() == \
        (tmp_path / "two" / "images" / "mini-00001-0.png").read_bytes()

    other = CliRunner().invoke(main, ["miniworld", "--n", "6", "--images-per-product", "2", "--steps", "3",
                                      "--out", str(tmp_path / "two")])
    assert other.exit_code == 1 and "other settings" in other.output
    bad = CliRunner().invoke(main, args + ["--out", str(tmp_path / "x"), "--shard", "2/2"])
    assert bad.exit_code == 2 and "--shard" in bad.output


def test_rfad_data_relabel_miniworld_applies_the_oracle_as_it_is_now(tmp_path, monkeypatch):
    """After a rule change, relabelling rewrites every label (records, manifest, labels.jsonl, summary)
    from the images on disk; with the rules unchanged it changes nothing."""
    from rfad.miniworld import oracle
    from rfad.trainer.data.cli import main
    from rfad.trainer.data.manifest import read_manifest

    out = tmp_path / "mini"
    args = ["miniworld", "--n", "4", "--images-per-product", "2", "--steps", "2", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = (out / "manifest.jsonl").read_text()
    same = CliRunner().invoke(main, ["relabel-miniworld", "--data", str(out)])
    assert same.exit_code == 0 and "0 labels changed" in same.output, same.output
    assert (out / "manifest.jsonl").read_text() == before

    monkeypatch.setattr(oracle, "NEAR_FRACTION", 0.0)  # a rule change: every ring counts as the product's colour
    changed = CliRunner().invoke(main, ["relabel-miniworld", "--data", str(out)])
    assert changed.exit_code == 0, changed.output
    assert {row.label for row in read_manifest(out / "manifest.jsonl")} == {"Indistinctiveness"}
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert all(entry["fired"][0] == "Indistinctiveness" for entry in labels)
    assert json.loads((out / "summary.json").read_text())["labels"]["Indistinctiveness"] == 4
    missing = CliRunner().invoke(main, ["relabel-miniworld", "--data", str(tmp_path)])
    assert missing.exit_code == 1 and "not an RF-mini folder" in missing.output


def test_rf_mini_keeps_final_latents_that_decode_to_its_images(tmp_path, tiny_zoo):
    """Decoding the kept latents again with the same generator gives the same images byte for byte;
    with another VAE of the same latent factor the images change and are labelled again; one of another
    factor is refused."""
    import shutil

    from safetensors.torch import load_file, save_file

    from rfad.miniworld import model_dir
    from rfad.trainer.data.cli import main

    out = tmp_path / "mini"
    assert CliRunner().invoke(main, ["miniworld", "--n", "2", "--images-per-product", "2", "--steps", "2",
                                     "--out", str(out)]).exit_code == 0
    first = (out / "images" / "mini-00000-1.png").read_bytes()
    assert sorted(p.name for p in (out / "latents").iterdir()) == ["mini-00000-0.npy", "mini-00000-1.npy"]
    same = CliRunner().invoke(main, ["relabel-miniworld", "--data", str(out), "--redecode", str(model_dir())])
    assert same.exit_code == 0 and "0 labels changed" in same.output, same.output
    assert (out / "images" / "mini-00000-1.png").read_bytes() == first
    # The tiny zoo's VAE has another latent factor (8): refused before any image is touched.
    wrong = CliRunner().invoke(main, ["relabel-miniworld", "--data", str(out), "--redecode", str(tiny_zoo)])
    assert wrong.exit_code == 1 and "--redecode" in wrong.output and "latent factor" in wrong.output
    assert (out / "images" / "mini-00000-1.png").read_bytes() == first
    # Another decoder of the same factor: the shipped one with its last convolution's bias moved.
    shutil.copytree(model_dir(), tmp_path / "other")
    weights = tmp_path / "other" / "sd15" / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"] + 0.5
    save_file(state, weights)
    other = CliRunner().invoke(main, ["relabel-miniworld", "--data", str(out), "--redecode", str(tmp_path / "other")])
    assert other.exit_code == 0, other.output
    assert (out / "images" / "mini-00000-1.png").read_bytes() != first
