"""The shipped miniature world's judge: present, hashing as its record says, and with the generator a
model set that declares the canvas both were trained on."""

from __future__ import annotations

from rfad.miniworld import file_hashes, training_record, world_dir


def test_shipped_judge_hashes_as_recorded_and_stays_small():
    record = training_record(world_dir())
    assert file_hashes(world_dir()) == record["files"]
    assert {"rfnet/model.safetensors", "dpt/model.safetensors", "u2net/model.safetensors",
            "rfad-models.json"} <= set(record["files"])
    # The mini RFNet (about 360k parameters, 1.5 MB), the map models and 60 held-out images (1 MB).
    assert sum(f["bytes"] for f in record["files"].values()) < 4e6
    # Its test-split scores, as benchmarks/studies/method/method_bench.py measured them: above the majority class.
    assert record["test_split"]["accuracy"] > record["test_split"]["majority_baseline"]


def test_the_shipped_judge_scores_its_heldout_images_as_recorded():
    """The shipped judge re-scored now on the RF-mini test images shipped beside it (maps computed by
    the shipped map models, eval-rfnet's code) gives the metrics recorded when it shipped: a change
    on the judge's path (tokenizer, product placement, maps, RFNet) changes them. And its Available AP
    there is above the base rate, what a judge that ranks at random scores."""
    from rfad.trainer.miniworld.ship_judge import heldout_metrics

    record = training_record(world_dir())["heldout"]
    now = heldout_metrics(world_dir())
    assert now["confusion"] == record["confusion"] and now["n"] == record["n"] >= 40
    assert abs(now["available_ap"] - record["available_ap"]) < 1e-6
    base_rate = record["support"]["Available"] / record["n"]
    assert record["available_ap"] > base_rate


def test_the_world_is_the_generator_the_judge_and_their_canvas():
    from rfad.miniworld import model_dir
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.miniworld.canvas import MINIWORLD_CANVAS

    world = ModelSet.resolve(world_dir())
    generator = ModelSet.resolve(model_dir())
    assert (world.sd, world.controlnet) == (generator.sd, generator.controlnet)
    assert world.canvas == MINIWORLD_CANVAS
    judge = load_judge_models(world)
    assert judge.rfnet.config.image_size == training_record(world_dir())["rfnet_train_config"]["image_size"]


def test_rfad_train_ship_judge_rebuilds_the_shipped_world_from_its_parts(tmp_path):
    """Shipping the shipped judge's RFNet, maps and scores again gives the same files, a world that
    resolves with the generator and canvas, and a record of the command; a metrics file that is not
    eval-rfnet's is refused."""
    import json

    from click.testing import CliRunner

    from rfad.miniworld import model_dir
    from rfad.miniworld.canvas import MINIWORLD_CANVAS
    from rfad.models.model_set import ModelSet
    from rfad.trainer.cli import main

    shipped = world_dir()
    record = training_record(shipped)
    metrics = tmp_path / "rfnet.json"
    metrics.write_text(json.dumps(record["test_split"]))
    out = tmp_path / "world"
    heldout = shipped / "heldout" / "manifest.jsonl"
    products = len({json.loads(line)["product"] for line in heldout.read_text().splitlines()})
    args = ["ship-judge", "--rfnet", str(shipped / "rfnet"), "--depth", str(shipped / "dpt"), "--saliency",
            str(shipped / "u2net"), "--metrics", str(metrics), "--out", str(out),
            "--heldout", str(heldout), "--heldout-products", str(products)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    again = training_record(out)
    assert file_hashes(out) == again["files"]
    same = {path: entry for path, entry in record["files"].items() if path != "rfad-models.json"}
    assert {path: again["files"][path] for path in same} == same
    assert again["test_split"] == record["test_split"] and again["command"][:2] == ["rfad-train", "ship-judge"]
    assert again["heldout"] == record["heldout"]
    world = ModelSet.resolve(out)
    assert world.canvas == MINIWORLD_CANVAS and world.sd == ModelSet.resolve(model_dir()).sd

    metrics.write_text(json.dumps({"accuracy": 0.5}))
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "--metrics" in refused.output and "available_ap" in refused.output
