"""The shipped miniature world's judge: present, hashing as its record says, and with the generator a
model set that declares the canvas both were trained on."""

from __future__ import annotations

from rfad.miniworld import file_hashes, training_record, world_dir


def test_shipped_judge_hashes_as_recorded_and_stays_small():
    record = training_record(world_dir())
    assert file_hashes(world_dir()) == record["files"]
    assert {"rfnet/model.safetensors", "dpt/model.safetensors", "u2net/model.safetensors",
            "rfad-models.json"} <= set(record["files"])
    assert sum(f["bytes"] for f in record["files"].values()) < 3e6
    # Its test-split scores, as benchmarks/method_bench.py measured them: above the majority class.
    assert record["test_split"]["accuracy"] > record["test_split"]["majority_baseline"]


def test_the_world_is_the_generator_the_judge_and_their_canvas():
    from rfad.miniworld import model_dir
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.trainer.data.scenes import MINIWORLD_CANVAS

    world = ModelSet.resolve(world_dir())
    generator = ModelSet.resolve(model_dir())
    assert (world.sd, world.controlnet) == (generator.sd, generator.controlnet)
    assert world.canvas == MINIWORLD_CANVAS
    judge = load_judge_models(world)
    assert judge.rfnet.config.image_size == training_record(world_dir())["rfnet_train_config"]["image_size"]
