"""The method study's machinery on tiny models and data: the judge's shapes and options, per-image scores,
intervals by product, and Recurrent Generation read off per-image records (checked against the loop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rfad.trainer.cli import main as train_cli
from rfad.trainer.data.synth import write_synthetic_dataset


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """60 synthetic samples at 64 px: 40 train, 10 val, 10 test (one product per sample)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("tiny-set") / "data", 60, seed=3, size=64).parent


def test_the_mini_judge_keeps_an_8x8_token_grid_at_128_px():
    from rfad.models.rfnet import RFNet, tiny_rfnet_config

    mini, tiny = tiny_rfnet_config("mini"), tiny_rfnet_config("tiny")
    mini.image_size = tiny.image_size = 128
    assert (mini.stride, mini.grid, tiny.stride, tiny.grid) == (16, 8, 32, 4)
    model = RFNet(type(mini)(**mini.to_dict())).eval()
    images = [torch.rand(2, c, 128, 128) for c in (3, 3, 1, 1)]
    ids, mask = torch.randint(3, 300, (2, 10)), torch.ones(2, 10, dtype=torch.long)
    assert model(*images, ids, mask).shape == (2, 5)
    with pytest.raises(ValueError, match="image_size: 120 must be a multiple of 16"):
        type(mini)(**{**mini.to_dict(), "image_size": 120})
    with pytest.raises(ValueError, match="backbone: unknown 'huge'"):
        tiny_rfnet_config("huge")


def test_rfad_train_rfnet_mini_backbone_a_share_of_products_and_per_image_scores(tiny_set, tmp_path):
    from rfad.models.rfnet import RFNet

    out = tmp_path / "mini"
    result = CliRunner().invoke(train_cli, ["rfnet", "--data", str(tiny_set), "--tiny", "--backbone", "mini",
                                            "--image-size", "64", "--epochs", "1", "--batch-size", "4",
                                            "--train-fraction", "0.5", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert RFNet.from_pretrained(out).config.grid == 4  # 64 px / stride 16
    log = json.loads((out / "train_log.json").read_text())
    assert log["config"]["train_fraction"] == 0.5 and log["config"]["backbone"] == "mini"
    assert log["history"][0]["step"] == 20 // 4  # half of the 40 training products, batch 4

    scores = tmp_path / "scores.json"
    result = CliRunner().invoke(train_cli, ["eval-rfnet", "--model", str(out), "--data", str(tiny_set),
                                            "--split", "val", "--json", str(scores), "--per-image"])
    assert result.exit_code == 0, result.output
    rows = json.loads(scores.read_text())["per_image"]
    assert len(rows) == 10 and all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)
    assert CliRunner().invoke(train_cli, ["eval-rfnet", "--model", str(out), "--data", str(tiny_set),
                                          "--per-image"]).exit_code == 2
    refused = CliRunner().invoke(train_cli, ["rfnet", "--data", str(tiny_set), "--backbone", "mini", "--resnet", "r",
                                              "--roberta", "r", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 1 and "--backbone mini" in refused.output and "--tiny" in refused.output


def test_a_share_of_the_training_products_keeps_whole_products():
    from rfad.trainer.data.manifest import ManifestRow
    from rfad.trainer.rfnet.train import products_share

    rows = [ManifestRow(id=f"{p}-{j}", generated="g", product=f"p{p}") for p in range(8) for j in range(5)]
    quarter = products_share(rows, 0.25, seed=1)
    assert len({r.product for r in quarter}) == 2 and len(quarter) == 10
    assert products_share(rows, 0.25, seed=1) == quarter and products_share(rows, 0.25, seed=2) != quarter
    assert products_share(rows, 1.0, seed=1) is rows


def test_intervals_resample_products_and_paired_differences_cancel_what_arms_share():
    from benchmarks.studies.method.stats import bootstrap_interval, paired_difference, share

    products = [f"p{i // 4}" for i in range(200)]  # 50 products x 4 images
    rng = np.random.default_rng(0)
    per_product = rng.random(50) < 0.4
    hits = [bool(per_product[i // 4]) for i in range(200)]  # all 4 images of a product agree: clustered
    low, high = bootstrap_interval(share(hits), products)
    assert low < np.mean(hits) < high
    # Clustered data: the interval is about twice as wide as 200 independent images would give.
    assert high - low > 2 * 1.96 * np.sqrt(0.4 * 0.6 / 200) * 1.5
    assert bootstrap_interval(share(hits), products) == (low, high)  # seeded: the same draws
    same = paired_difference(share(hits), share(hits), products)
    assert same["difference"] == same["low"] == same["high"] == 0.0 and same["p"] == 1.0
    better = [h or i % 4 == 0 for i, h in enumerate(hits)]  # one more hit per product
    gain = paired_difference(share(better), share(hits), products)
    assert 0 < gain["low"] <= gain["difference"] <= gain["high"] and gain["p"] < 0.01


def test_the_loop_read_off_records_stops_at_the_first_pass_and_else_returns_the_best():
    from benchmarks.studies.method.loop_arms import arms, run_loop

    labels = ["Size Mismatch", "Available", "Available", "Space Mismatch", "Available"]
    assert run_loop([0.1, 0.7, 0.9, 0.2, 0.3], labels, 0.5, 5).attempts == 2
    none = run_loop([0.1, 0.3, 0.3, 0.2, 0.05], labels, 0.5, 5)
    assert (none.attempts, none.returned, none.oracle) == (5, 1, "Available")  # the first of the best
    with pytest.raises(ValueError, match="max_attempts: 5 attempts need 5 images"):
        run_loop([0.1], labels[:1], 0.5, 5)
    records = [{"product": "a", "seed": 10 + j, "oracle": label, "probabilities": {"J": [p, 0, 0, 0, 1 - p]}}
               for j, (label, p) in enumerate(zip(labels, [0.1, 0.2, 0.9, 0.8, 0.3]))]
    out = arms(list(reversed(records)), ["J"], 0.5, 5)  # records in any order: attempts follow the seeds
    assert out["one attempt"][0].oracle == "Size Mismatch"
    assert (out["J"][0].attempts, out["J"][0].available) == (3, True)
    assert (out["oracle"][0].attempts, out["oracle"][0].available) == (2, True)


def test_records_read_off_like_the_loop_the_same_seeds_run(tiny_zoo):
    """RF-mini draws a product's images in one attempt of K with seeds seed..seed+K-1; the loop with
    one candidate per attempt draws attempt a with seed + a - 1. The records' reading of the loop
    equals what generate returns: attempts, returned seed, image (within 1/255)."""
    from benchmarks.studies.method.loop_arms import run_loop
    from rfad.canvas import CanvasSpec, prepare_canvas
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models
    from rfad.models.model_set import ModelSet
    from rfad.pipeline.generate import generate
    from rfad.pipeline.judge import RunnerJudge
    from rfad.pipeline.settings import GenerationSettings
    from rfad.pipeline.torch_runner import TorchRunner
    from rfad.tiny.products import draw_product

    model_set = ModelSet.resolve(tiny_zoo)
    runner = TorchRunner(load_diffusion_models(model_set), "cpu", judge=load_judge_models(model_set))
    judge = RunnerJudge(runner)
    canvas = prepare_canvas(draw_product("bottle"), CanvasSpec(width=128, height=128))  # the tiny zoo's size
    batch = generate(runner, canvas, "a bottle", GenerationSettings(steps=2, seed=40, num_images=3, candidates=3,
                                                                     max_attempts=1), caption="red bottle")
    state = judge.prepare(canvas, "red bottle")
    p = judge(np.stack([c.image for c in batch.candidates]), state)[:, 0]
    assert p.max() < 1.0
    for threshold in (float(np.sort(p)[1]), 1.0):  # one the 2nd-lowest passes; one nothing passes
        read = run_loop(p.tolist(), ["x"] * 3, threshold, 3)
        loop = generate(runner, canvas, "a bottle", GenerationSettings(steps=2, seed=40, num_images=1, candidates=1,
                                                                        max_attempts=3, threshold=threshold),
                        caption="red bottle", judge=judge)
        assert loop.attempts == read.attempts and loop.images[0].seed == 40 + read.returned
        diff = np.abs(loop.images[0].image.astype(int) - batch.candidates[read.returned].image.astype(int))
        assert diff.max() <= 1


def test_the_evidence_study_shows_the_judge_drawn_scenes_or_their_vae_round_trip(tmp_path):
    """benchmarks.studies.method.judge_evidence: the vae arm passes the scenes through the named VAE with the
    product pasted back, a part is named by the VAE's factor and hash, the metrics read the probabilities
    right, and docs/method.md's block renders every arm."""
    import argparse

    from benchmarks.studies.method import judge_evidence as study
    from rfad.miniworld import file_sha256, model_dir

    scenes = study.draw_split(5, study.VAL_SEED)
    assert [scene.label for scene in scenes] == ["Available", "Space Mismatch", "Size Mismatch", "Indistinctiveness",
                                                "Shape Hallucination"]
    folder = study.vae_folder(None)
    assert folder.resolve() == (model_dir() / "sd15" / "vae").resolve()
    name, identity = study.vae_name(None)
    [weights] = folder.glob("*.safetensors")
    assert name == f"vae-f4-{file_sha256(weights)[:8]}" and identity["factor"] == 4

    from diffusers import AutoencoderKL

    drawn = study.arm_images(scenes, None)
    decoded = study.arm_images(scenes, AutoencoderKL.from_pretrained(folder).eval())
    for scene, image, original in zip(scenes, decoded, drawn):
        solid = scene.canvas.product_alpha == 255
        assert np.array_equal(image[solid], scene.canvas.product_rgb[solid])  # the product pasted back
        assert np.abs(image[~solid].astype(int) - original[~solid].astype(int)).mean() > 0.5  # the background decoded

    labels = np.array([0, 0, 1, 2, 3, 4])
    probabilities = np.eye(5)[[0, 2, 1, 2, 3, 4]] * 0.6 + 0.05
    probabilities[1, 0] = 0.3  # called Size Mismatch, yet ranked above every other class's Available score
    metrics = study.evaluate(probabilities, labels)
    assert metrics["accuracy"] == pytest.approx(5 / 6) and metrics["available_ap"] == pytest.approx(1.0)
    assert metrics["base_rate"] == pytest.approx(2 / 6) and np.asarray(metrics["confusion"]).trace() == 5

    args = argparse.Namespace(train=10, val=10, steps=2, seed=0)
    rows = [{**study.run_arm("clean", None, args), "name": "clean"},
            {**study.run_arm("vae", None, args), "name": name, **identity}]
    for row in rows:
        assert row["val"] == 10 and len(row["log"]) == 2 and 0 <= row["accuracy"] <= 1
        assert set(row["oracle_per_class"]) == {scene.label for scene in scenes}
    assert rows[0]["oracle_agreement"] == 1.0  # the oracle agrees with every drawn scene
    assert study.refresh_oracle(rows[0]) is rows[0]  # measured under the current rules: kept
    stale = {**rows[0], "oracle_rules": [["older rules"]], "oracle_agreement": 0.0}
    assert study.refresh_oracle(stale)["oracle_agreement"] == 1.0  # measured again
    text = study.block({"rows": rows})
    assert "| drawn scenes | 10 / 10 | 2 |" in text and "after the VAE (factor 4, " in text and "the shipped generator's)" in text
    earlier = {**rows[1], "vae_sha256": "0" * 64, "factor": 8}  # measured on a VAE shipped before: not called shipped
    assert "after the VAE (factor 8, 00000000)" in study.block({"rows": [rows[0], earlier]})


def _bench_work(tiny_set, tmp_path):
    """A method-bench work folder on the tiny set, as the data and pretrain parts leave it: RF-mini's maps
    and labels, and a pretrained judge. Returns (work folder, the tiny recipe)."""
    import shutil

    from benchmarks.studies.method import judges as judge_runs
    from benchmarks.studies.method import method_bench as bench
    from rfad.trainer.data.manifest import read_manifest

    work = tmp_path / "work"
    shutil.copytree(tiny_set, work / "rf-mini-maps")
    rows = read_manifest(work / "rf-mini-maps" / "manifest.jsonl")
    (work / "rf-mini").mkdir()
    (work / "rf-mini" / "labels.jsonl").write_text("".join(
        json.dumps({"id": row.id, "seed": i, "prompt_from": row.label, "fired": [], "measurements": {}}) + "\n"
        for i, row in enumerate(rows)))
    recipe = judge_runs.Recipe(image_size=64, pretrain_epochs=1, epochs=1, batch_size=8)
    judge_runs.train_judge(bench.data_manifest(work), work / "pretrained-judge", (), recipe, 0, None)
    (work / "pretrained").symlink_to("pretrained-judge")
    return work, recipe


def test_the_recipe_part_keeps_the_candidate_of_best_validation_ap(tiny_set, tmp_path):
    """Each fine-tuning recipe is trained once from the pretrained judge and scored on validation products;
    the kept one has the highest Available AP there, its scores stay in the validation records, and the
    curve and judges parts train with it."""
    import argparse

    from benchmarks.studies.method import method_bench as bench
    from benchmarks.studies.method.records import p_available, read_records
    from rfad.trainer.api import average_precision

    work, recipe = _bench_work(tiny_set, tmp_path)
    args = argparse.Namespace(work=work, recipe=recipe, recipe_candidates=[(1, 8, 1e-3), (2, 8, 3e-3)], shard=(0, 1))

    result = bench.part_recipe(args)
    records = read_records(work / "records_val.jsonl")
    positives = [r["oracle"] == "Available" for r in records]
    for candidate in result["candidates"]:
        assert candidate["val_ap"] == average_precision([p_available(r, candidate["judge"]) for r in records],
                                                        positives)
    best = max(result["candidates"], key=lambda c: c["val_ap"] if c["val_ap"] is not None else -1.0)
    assert result["chosen"] == {"epochs": best["epochs"], "batch_size": best["batch_size"], "lr": best["lr"]}
    assert bench.chosen_recipe(args) == recipe  # not saved yet: the flags' recipe
    bench._save(work, "recipe", result)
    assert (bench.chosen_recipe(args).epochs, bench.chosen_recipe(args).lr) == (best["epochs"], best["lr"])


def test_a_judge_run_stopped_mid_training_resumes_when_the_bench_runs_again(tiny_set, tmp_path):
    """The bench's long runs are resumable: a judge whose training was stopped (checkpoints, no train log)
    is continued from its latest checkpoint by the next bench run, to the weights of an unstopped run, and
    its recorded training time counts the stopped call."""
    from safetensors.torch import load_file

    from benchmarks.studies.method import judges as judge_runs
    from rfad.trainer.api import RFNetTrainConfig, train_rfnet

    recipe = judge_runs.Recipe(image_size=64, pretrain_epochs=1, epochs=2, batch_size=8)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    judge_runs.train_judge(tiny_set / "manifest.jsonl", whole, (), recipe, 0, None)
    train_rfnet(RFNetTrainConfig(data=str(tiny_set / "manifest.jsonl"), out=str(stopped), tiny=True,
                                 backbone=recipe.backbone, epochs=recipe.epochs, image_size=recipe.image_size,
                                 lr=recipe.lr, batch_size=recipe.batch_size, product_scale=recipe.product_scale,
                                 seed=0, max_steps=1), echo=lambda *_: None)
    assert not (stopped / judge_runs.TRAIN_LOG).is_file()
    [checkpoint] = (stopped / "checkpoints").iterdir()
    before_stop = json.loads((checkpoint / "state.json").read_text())["seconds"]
    assert before_stop > 0

    judge_runs.train_judge(tiny_set / "manifest.jsonl", stopped, (), recipe, 0, None)
    # Its recorded time is the whole run's: the call stopped counts too.
    total = json.loads((stopped / judge_runs.TRAIN_LOG).read_text())["train_seconds"]
    assert total > before_stop and float((tmp_path / "stopped.seconds").read_text()) == pytest.approx(total, abs=0.1)
    expected, resumed = load_file(whole / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_sharded_training_parts_split_the_judges_and_the_unsharded_call_scores_them(tiny_set, tmp_path, monkeypatch):
    """recipe with --shard I/N: each process trains the judges no other has claimed (no two the same folder),
    writes no record and saves nothing; the unsharded call then trains nothing more, scores every judge and
    saves the part."""
    import argparse

    from benchmarks.studies.method import judges as judge_runs
    from benchmarks.studies.method import method_bench as bench

    work, recipe = _bench_work(tiny_set, tmp_path)
    candidates = [(1, 8, 1e-3), (1, 8, 3e-3), (2, 8, 1e-3)]
    folders = [work / "recipe-candidates" / f"e{e}-b{b}-lr{lr:g}" for e, b, lr in candidates]

    trained_by = {}
    for index in range(2):
        args = argparse.Namespace(work=work, recipe=recipe, recipe_candidates=candidates, shard=(index, 2))
        before = {f for f in folders if (f / judge_runs.TRAIN_LOG).is_file()}
        assert bench.part_recipe(args) is None
        trained_by[index] = {f for f in folders if (f / judge_runs.TRAIN_LOG).is_file()} - before
        assert not (work / "records_val.jsonl").exists()
    assert trained_by[0] | trained_by[1] == set(folders) and not trained_by[0] & trained_by[1]

    def no_training(*_, **__):
        raise AssertionError("every judge was trained by a shard")

    monkeypatch.setattr(judge_runs, "train_rfnet", no_training)
    result = bench.part_recipe(argparse.Namespace(work=work, recipe=recipe, recipe_candidates=candidates,
                                                  shard=(0, 1)))
    assert [c["judge"] for c in result["candidates"]] == [f"recipe {f.name} s0" for f in folders]
    assert all(c["val_ap"] is not None for c in result["candidates"])


def test_a_judge_claimed_by_a_running_bench_is_left_to_it_and_a_stopped_ones_claim_is_taken_over(tmp_path):
    """--shard in the training parts: processes claim judges as they reach them (a lock on FOLDER.claim held
    for the process's life); a judge claimed by another running process is left to it, a stopped process's
    claim is taken over, and a claim this process takes keeps the others off."""
    import argparse
    import subprocess
    import sys

    from benchmarks.studies.method import method_bench as bench

    args = argparse.Namespace(work=tmp_path, shard=(1, 2))
    folder = tmp_path / "judges" / "rfnet-s0"
    folder.parent.mkdir(parents=True)
    hold = ("import fcntl, os, sys, time; h = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
            "fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)")
    other = subprocess.Popen([sys.executable, "-c", hold, str(folder.with_name("rfnet-s0.claim"))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        assert bench._trained_elsewhere(args, folder)
    finally:
        other.kill()
        other.wait()
    assert not bench._trained_elsewhere(args, folder)  # its process stopped: taken over
    assert not bench._trained_elsewhere(args, folder)  # now ours
    fresh = tmp_path / "judges" / "rfnet-s1"
    assert not bench._trained_elsewhere(args, fresh)
    # Another process now finds both claimed.
    probe = ("import fcntl, os, sys\nfor path in sys.argv[1:]:\n    h = os.open(path, os.O_RDWR)\n"
             "    try:\n        fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        sys.exit(f'free: {path}')\n"
             "    except BlockingIOError:\n        pass\n")
    claims = [str(f.with_name(f.name + ".claim")) for f in (folder, fresh)]
    assert subprocess.run([sys.executable, "-c", probe, *claims], capture_output=True, text=True).returncode == 0
