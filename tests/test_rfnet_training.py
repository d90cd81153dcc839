"""RFNet training kit: ``rfad-data prepare`` (cached maps), ``rfad-train rfnet`` and ``eval-rfnet``.

Everything runs on CPU with tiny random-weight models and the synthetic dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from rfad.trainer.data.cli import main as data_cli
from rfad.trainer.data.manifest import ManifestRow, read_manifest, write_manifest
from rfad.trainer.data.prepare import (
    MAP_KINDS,
    map_file_name,
    merge_shards,
    parse_shard,
    prepare_maps,
    shard_manifest_name,
)
from rfad.trainer.data.synth import write_synthetic_dataset


# ---------------------------------------------------------------- rfad-data prepare


@pytest.fixture(scope="module")
def map_models(tmp_path_factory):
    """(DPT folder, U2-Net folder): the tiny zoo's map models, saved through the real save paths."""
    from transformers import DPTImageProcessor

    from rfad.tiny.zoo import build_tiny_u2net, tiny_dpt

    root = tmp_path_factory.mktemp("maps")
    tiny_dpt(0).save_pretrained(root / "dpt", safe_serialization=True)
    DPTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "dpt")
    build_tiny_u2net(0).save_pretrained(root / "u2net")
    return root / "dpt", root / "u2net"


@pytest.fixture
def small_set(tmp_path):
    """A 5-row synthetic dataset plus one row whose generated image is truncated (a corrupt file)."""
    manifest = write_synthetic_dataset(tmp_path / "data", 5, seed=1, size=64)
    rows = read_manifest(manifest)
    whole = (manifest.parent / rows[0].generated).read_bytes()
    (manifest.parent / "images" / "broken.png").write_bytes(whole[: len(whole) // 3])
    rows.append(ManifestRow(id="broken/one", generated="images/broken.png", product=rows[0].product,
                            caption="x", label="Available", split="train"))
    write_manifest(rows, manifest)
    return manifest


def _map_files(out: Path) -> dict[str, set[str]]:
    return {kind: {p.name for p in (out / kind).glob("*.png")} for kind in MAP_KINDS}


def test_prepare_writes_maps_and_is_resumable(small_set, map_models, tmp_path):
    depth, saliency = map_models
    out = tmp_path / "prepared"
    written, report = prepare_maps(small_set, depth, saliency, out, batch_size=4, device="cpu", progress=False)
    assert written == out / "manifest.jsonl"
    assert report.computed == {"depth": 5, "saliency": 5} and report.kept == {"depth": 0, "saliency": 0}
    # The corrupt generated image is reported by reason, not fatal, and its row keeps no maps.
    assert report.bad.skipped == {"corrupt_generated": 1}
    rows = {row.id: row for row in read_manifest(written)}
    assert len(rows) == 6 and rows["broken/one"].depth is None and rows["broken/one"].saliency is None
    for row_id, row in rows.items():
        if row_id == "broken/one":
            continue
        for kind in MAP_KINDS:
            path = out / getattr(row, kind)
            assert path.name == map_file_name(row_id) and path.parent.name == kind
            with Image.open(path) as image:
                assert image.mode == "L" and image.size == (64, 64)
                assert image.getextrema() != (0, 0)  # a real map, not a blank
        # The other paths are re-expressed relative to the new manifest's folder.
        assert (out / row.generated).is_file() and (out / row.product).is_file()
    assert not list(out.rglob("*.partial"))  # atomic writes left no temporaries

    # Second run: everything is there, nothing is computed (the models are not even loaded).
    _, again = prepare_maps(small_set, depth, saliency, out, device="cpu", progress=False)
    assert again.computed == {"depth": 0, "saliency": 0} and again.kept == {"depth": 5, "saliency": 5}

    # Delete one map and truncate another: exactly those two are recomputed.
    first, second = [row_id for row_id in rows if row_id != "broken/one"][:2]
    (out / rows[first].saliency).unlink()
    depth_file = out / rows[second].depth
    depth_file.write_bytes(depth_file.read_bytes()[:40])
    _, repair = prepare_maps(small_set, depth, saliency, out, device="cpu", progress=False)
    assert repair.computed == {"depth": 1, "saliency": 1}
    with Image.open(depth_file) as image:
        image.load()
    assert read_manifest(written) == list(rows.values())


def test_prepare_refuses_a_folder_of_maps_from_other_models(small_set, map_models, tmp_path):
    """A re-run keeps the maps it finds, so a folder whose maps another depth or saliency model made
    is refused (naming the flag and the models it was made with), and nothing in it changes."""
    from rfad.tiny.zoo import build_tiny_u2net

    depth, saliency = map_models
    out = tmp_path / "prepared"
    prepare_maps(small_set, depth, saliency, out, device="cpu", progress=False)
    assert json.loads((out / "map_models.json").read_text())["saliency"]["path"] == str(saliency)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    build_tiny_u2net(1).save_pretrained(tmp_path / "other-u2net")
    with pytest.raises(ValueError, match=rf"--out {out}: its maps were computed with other saliency models "
                                         rf"\(--saliency was {saliency}\)"):
        prepare_maps(small_set, depth, tmp_path / "other-u2net", out, device="cpu", progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # Maps without the record (written before it existed) are refused too: who made them is unknown.
    (out / "map_models.json").unlink()
    with pytest.raises(ValueError, match="holds maps without map_models.json"):
        prepare_maps(small_set, depth, saliency, out, device="cpu", progress=False)


def test_prepare_shards_cover_all_rows_and_merge(small_set, map_models, tmp_path):
    depth, saliency = map_models
    whole, _ = prepare_maps(small_set, depth, saliency, tmp_path / "whole", device="cpu", progress=False)
    out = tmp_path / "sharded"
    runner = CliRunner()
    for shard in ("0/2", "1/2"):
        result = runner.invoke(data_cli, ["prepare", "--manifest", str(small_set), "--depth", str(depth),
                                          "--saliency", str(saliency), "--out", str(out), "--shard", shard,
                                          "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert "corrupt_generated" in result.output or shard == "0/2"  # the broken row is row 5: shard 1
    shard_ids = [[row.id for row in read_manifest(out / shard_manifest_name(i, 2))] for i in range(2)]
    all_ids = [row.id for row in read_manifest(small_set)]
    assert shard_ids == [all_ids[0::2], all_ids[1::2]]
    merged = merge_shards(small_set, out, 2)
    # Same rows, same order, same map file names as a one-process run; the PNGs are identical.
    assert read_manifest(merged) == read_manifest(whole)
    assert _map_files(out) == _map_files(whole.parent)
    for kind in MAP_KINDS:
        for name in _map_files(out)[kind]:
            assert (out / kind / name).read_bytes() == (whole.parent / kind / name).read_bytes()


def test_prepare_refuses_bad_arguments_clearly(small_set, map_models, tmp_path):
    depth, saliency = map_models
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    runner = CliRunner()
    base = ["prepare", "--manifest", str(small_set), "--depth", str(depth), "--out", str(tmp_path / "o")]
    result = runner.invoke(data_cli, base + ["--saliency", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "--saliency" in result.output and "does not exist" in result.output
    result = runner.invoke(data_cli, base + ["--saliency", str(saliency), "--shard", "0/2", "--workers", "2"])
    assert result.exit_code == 1 and "exclude each other" in result.output
    result = runner.invoke(data_cli, ["prepare", "--manifest", str(small_set), "--depth", str(depth),
                                      "--saliency", str(saliency), "--out", str(small_set.parent)])
    assert result.exit_code == 1 and "overwrite the input manifest" in result.output


def test_map_file_names_are_safe_and_distinct():
    names = {map_file_name(i) for i in ("a/b", "a_b", "a b", "../x", "ü", "")}
    assert len(names) == 6
    assert all("/" not in n and not n.startswith(".") and n.endswith(".png") for n in names)
    assert map_file_name("a/b") == map_file_name("a/b")


# ---------------------------------------------------------------- rfad-train rfnet / eval-rfnet

from rfad.trainer.cli import main as train_cli  # noqa: E402


def _train(*args: str):
    """Run ``rfad-train ARGS`` in process; returns the click result (exit code, output)."""
    return CliRunner().invoke(train_cli, list(args), catch_exceptions=False)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """60 synthetic samples at 64 px: 40 train, 10 val, 10 test."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("tiny-set") / "data", 60, seed=3, size=64).parent


@pytest.mark.slow
def test_tiny_rfnet_beats_the_majority_baseline(tmp_path):
    from transformers import AutoTokenizer

    from rfad.models.rfnet import RFNet

    data = write_synthetic_dataset(tmp_path / "data", 600, seed=0, size=64).parent
    out = tmp_path / "rfnet"
    result = _train("rfnet", "--data", str(data), "--tiny", "--epochs", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "epoch 5/5" in result.output and "RFNet (last epoch) written" in result.output

    metrics_file = tmp_path / "metrics.json"
    result = _train("eval-rfnet", "--model", str(out), "--data", str(data), "--json", str(metrics_file))
    assert result.exit_code == 0, result.output
    metrics = json.loads(metrics_file.read_text())
    assert {"accuracy", "majority_baseline", "available", "per_class", "confusion_matrix"} <= set(metrics)
    assert set(metrics["available"]) >= {"precision", "recall", "f1", "ap"}
    assert metrics["n"] == 90 and sum(map(sum, metrics["confusion_matrix"]["counts"])) == 90
    # Balanced classes: the majority baseline is 1/5. Measured: 0.54-0.64 accuracy (2 seeds).
    assert metrics["majority_baseline"] == pytest.approx(0.2)
    assert metrics["accuracy"] >= metrics["majority_baseline"] + 0.15, metrics
    assert "accuracy" in result.output and "majority baseline" in result.output

    # The output is a model folder like any other: the judge and its caption tokenizer load back.
    model = RFNet.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.image_size == 64 and tokenizer("red mug").input_ids[0] == tokenizer.bos_token_id
    log = json.loads((out / "train_log.json").read_text())
    assert log["final_model"] == "last epoch" and len(log["history"]) == 5
    assert [h["lr"] for h in log["history"]] == pytest.approx([1e-3] * 3 + [1e-4] * 2)
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard logs


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tiny_set, tmp_path):
    # 40 training rows, batch 3 x accumulation 2: 6 optimiser steps per epoch, 12 in all.
    base = ["rfnet", "--data", str(tiny_set), "--tiny", "--epochs", "2", "--checkpoint-steps", "3",
            "--keep-checkpoints", "2"]
    common = base + ["--batch-size", "3", "--grad-accum", "2"]
    whole = tmp_path / "whole"
    assert _train(*common, "--out", str(whole)).exit_code == 0
    # Only the newest two checkpoints are kept and no temporary folder is left behind.
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == ["step-00000009", "step-00000012"]

    # Interrupted mid-epoch 2 (step 10, after the step-9 checkpoint), then resumed twice over.
    split = tmp_path / "split"
    result = _train(*common, "--out", str(split), "--max-steps", "10")
    assert "stopped after 10 steps" in result.output and not (split / "model.safetensors").exists()
    state = json.loads((split / "checkpoints" / "step-00000010" / "state.json").read_text())
    assert (state["epoch"], state["step"], state["step_in_epoch"]) == (1, 10, 4)
    assert _train(*common, "--out", str(split), "--resume", "--max-steps", "11").exit_code == 0
    result = _train(*common, "--out", str(split), "--resume")
    assert "resuming from" in result.output and result.exit_code == 0
    assert _identical(_weights(whole), _weights(split))
    assert json.loads((whole / "train_log.json").read_text())["history"] == \
        json.loads((split / "train_log.json").read_text())["history"]

    # A fresh run into a folder with checkpoints, or a resume with other numbers, is refused.
    result = CliRunner().invoke(train_cli, common + ["--out", str(split)])
    assert result.exit_code == 1 and "--resume" in result.output
    result = CliRunner().invoke(train_cli, base + ["--batch-size", "4", "--out", str(split), "--resume"])
    assert result.exit_code == 1 and "same numbers" in result.output

    # Every checkpoint file's SHA-256 is in state.json: a truncated file is named, not loaded.
    latest = split / "checkpoints" / "step-00000012"
    assert set(json.loads((latest / "state.json").read_text())["files"]) >= {"model.safetensors", "optimizer.bin",
                                                                            "random_states_0.pkl"}
    optimizer = latest / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    result = CliRunner().invoke(train_cli, common + ["--epochs", "3", "--out", str(split), "--resume"])
    assert result.exit_code == 1 and "optimizer.bin is corrupt" in result.output
    (latest / "random_states_0.pkl").unlink()
    result = CliRunner().invoke(train_cli, common + ["--epochs", "3", "--out", str(split), "--resume"])
    assert result.exit_code == 1 and "random_states_0.pkl is missing" in result.output


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_process_cpu_run_writes_a_loadable_model(tiny_set, tmp_path, launcher):
    import os
    import subprocess
    import sys

    from rfad.models.rfnet import RFNet

    out = tmp_path / "rfnet"
    bin_dir = Path(sys.executable).parent
    launch = {
        "torchrun": [str(bin_dir / "torchrun"), "--nproc_per_node", "2"],
        # Without GPUs accelerate starts ONE process unless --multi_gpu (its torchrun launcher) is given.
        "accelerate": [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
    }[launcher]
    command = launch + ["-m", "rfad.trainer.cli", "rfnet", "--data", str(tiny_set), "--tiny", "--epochs", "1",
                        "--batch-size", "4", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Only the main process reports: one epoch line, one "written" line; 40 rows / 2 processes / 4 = 5 steps.
    assert done.stdout.count("epoch 1/1: step 5,") == 1 and done.stdout.count("written to") == 1
    checkpoint = out / "checkpoints" / "step-00000005"
    assert sorted(p.name for p in checkpoint.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert json.loads((checkpoint / "state.json").read_text())["processes"] == 2
    RFNet.from_pretrained(out)


def test_bad_rows_are_reported_and_never_enter_a_batch(tmp_path):
    data = tmp_path / "data"
    manifest = write_synthetic_dataset(data, 24, seed=4, size=64, val_fraction=0.0, test_fraction=0.0)
    rows = read_manifest(manifest)
    whole = (data / rows[0].generated).read_bytes()
    (data / "images" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    template = dict(product=rows[0].product, caption="red mug", split="train")
    rows += [
        ManifestRow(id="missing", generated="images/nope.png", label="Available", **template),
        ManifestRow(id="unknown-label", generated=rows[0].generated, label="Unsuitable", **template),
        ManifestRow(id="corrupt", generated="images/truncated.png", label="Available", **template),
    ]
    write_manifest(rows, manifest)

    from rfad.trainer.rfnet.train import RFNetTrainConfig, build_map_models, load_split_rows

    messages = []
    good, _ = load_split_rows(data, "train", messages.append)
    assert len(good) == 24 and {"missing", "unknown-label", "corrupt"}.isdisjoint(r.id for r in good)
    report = "\n".join(messages)
    assert all(reason in report for reason in ("missing_file", "unknown_label", "corrupt_image"))

    # Training over them succeeds: any of them in a batch would raise (undecodable image,
    # missing file, label outside CLASS_NAMES). 24 good rows / batch 8 = 3 steps.
    result = _train("rfnet", "--data", str(data), "--tiny", "--epochs", "1", "--batch-size", "8",
                    "--out", str(tmp_path / "r"))
    assert result.exit_code == 0 and "epoch 1/1: step 3," in result.output
    assert "3 skipped" in result.output and "corrupt_image" in result.output


def test_pretrained_backbones_train_on_prepared_maps(small_set, map_models, tmp_path):
    from rfad.models.rfnet import RFNet
    from rfad.tiny.tokenizers import build_roberta_tokenizer
    from rfad.tiny.zoo import tiny_resnet, tiny_roberta

    tokenizer = build_roberta_tokenizer()
    tiny_resnet(0).save_pretrained(tmp_path / "resnet", safe_serialization=True)
    tiny_roberta(tokenizer, 0).save_pretrained(tmp_path / "roberta", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "roberta")
    backbones = ["--resnet", str(tmp_path / "resnet"), "--roberta", str(tmp_path / "roberta")]
    # Every row in the train split, so that the 5 good rows make one batch.
    rows = read_manifest(small_set)
    for row in rows:
        row.split = "train"
    write_manifest(rows, small_set)

    common = ["rfnet", "--epochs", "1", "--batch-size", "5", "--image-size", "64", *backbones]
    result = CliRunner().invoke(train_cli, common + ["--data", str(small_set), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "rfad-data prepare" in result.output and "--depth" in result.output
    result = CliRunner().invoke(train_cli, ["rfnet", "--data", str(small_set), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "--resnet" in result.output and "--tiny" in result.output

    depth, saliency = map_models
    prepared, _ = prepare_maps(small_set, depth, saliency, tmp_path / "prepared", device="cpu", progress=False)
    result = _train(*common, "--data", str(prepared.parent), "--out", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert "corrupt_image" in result.output  # the broken row, dropped before training
    model = RFNet.from_pretrained(tmp_path / "b")
    assert model.config.width == 384 and model.config.resnet["hidden_sizes"] == [8, 16, 16, 32]


# ---------------------------------------------------------------- metrics


def test_average_precision_matches_hand_computed_values():
    from rfad.trainer.rfnet.evaluate import average_precision

    # Ranked: +, -, +, -, +  ->  precision at the positives 1/1, 2/3, 3/5.
    assert average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [True, False, True, False, True]) == \
        pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # Order of the input does not matter, ties enter together: {0.9: +}, {0.5: +, -, -}.
    assert average_precision([0.5, 0.9, 0.5, 0.5], [False, True, True, False]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 4)
    assert average_precision([0.5, 0.9, 0.5, 0.5], [True, True, False, False]) == pytest.approx(0.5 + 0.5 * 2 / 4)
    assert average_precision([0.1, 0.2], [False, False]) is None


def test_compute_metrics_on_a_fixed_example():
    import torch

    from rfad.trainer.rfnet.evaluate import compute_metrics

    # 4 test rows; classes: Available=0, Space Mismatch=1, Size Mismatch=2.
    probabilities = torch.tensor([[0.7, 0.1, 0.1, 0.05, 0.05],   # true 0, predicted 0
                                  [0.6, 0.3, 0.1, 0.0, 0.0],     # true 1, predicted 0
                                  [0.2, 0.1, 0.7, 0.0, 0.0],     # true 2, predicted 2
                                  [0.4, 0.5, 0.1, 0.0, 0.0]])    # true 0, predicted 1
    labels = torch.tensor([0, 1, 2, 0])
    metrics = compute_metrics(probabilities, labels, train_labels=[1, 1, 1, 0, 2])
    assert metrics["accuracy"] == 0.5
    assert metrics["majority_class"] == "Space Mismatch" and metrics["majority_baseline"] == 0.25
    available = metrics["available"]  # p >= 0.5 for rows 0 and 1; truly Available: rows 0 and 3
    assert (available["precision"], available["recall"], available["f1"]) == (0.5, 0.5, 0.5)
    assert available["ap"] == pytest.approx((1 / 1 + 2 / 3) / 2)  # ranked 0.7 +, 0.6 -, 0.4 +, 0.2 -
    assert metrics["per_class"]["Available"]["support"] == 2
    assert metrics["confusion_matrix"]["counts"][0] == [1, 1, 0, 0, 0]
    assert metrics["confusion_matrix"]["counts"][1] == [1, 0, 0, 0, 0]


def test_the_product_image_is_placed_at_the_training_scale_and_eval_follows_it(tiny_set, tmp_path):
    """``--product-scale`` places I_o as the served canvas does (rfad_judge_prepare), and eval-rfnet
    scores a model at the scale it was trained at unless told otherwise."""
    import numpy as np
    from transformers import AutoTokenizer

    from rfad.trainer.rfnet.dataset import RFNetDataset
    from rfad.trainer.rfnet.train import RFNetTrainConfig, build_map_models, load_split_rows

    out = tmp_path / "rfnet"
    result = _train("rfnet", "--data", str(tiny_set), "--tiny", "--epochs", "1", "--product-scale", "0.5",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "train_log.json").read_text())["config"]["product_scale"] == 0.5

    rows, root = load_split_rows(tiny_set, "test", lambda *_: None)
    tokenizer = AutoTokenizer.from_pretrained(out)
    maps = build_map_models(RFNetTrainConfig(data=str(tiny_set), out=str(out), tiny=True))

    def product_width(scale: float) -> int:
        image = RFNetDataset(rows[:1], root, tokenizer, 64, 16, maps, product_scale=scale)[0]["product_image"].numpy()
        background = image[:, :1, :1]  # the canvas corner
        columns = np.nonzero(np.abs(image - background).max(axis=(0, 1)) > 1e-3)[0]
        return int(columns[-1] - columns[0] + 1)

    assert product_width(0.5) / product_width(0.75) == pytest.approx(0.5 / 0.75, abs=0.05)

    metrics_file = tmp_path / "m.json"
    assert _train("eval-rfnet", "--model", str(out), "--data", str(tiny_set), "--json", str(metrics_file)).exit_code == 0
    assert json.loads(metrics_file.read_text())["product_scale"] == 0.5
    assert json.loads(metrics_file.read_text())["product_scale_from"] == "train_log.json"
    assert _train("eval-rfnet", "--model", str(out), "--data", str(tiny_set), "--product-scale", "0.75",
                  "--json", str(metrics_file)).exit_code == 0
    assert json.loads(metrics_file.read_text())["product_scale"] == 0.75
    # A model without its training log does not say where it was trained to see I_o: the scale is asked for.
    no_log = tmp_path / "no-log"
    shutil.copytree(out, no_log, ignore=shutil.ignore_patterns("train_log.json", "checkpoints", "logs"))
    unknown = _train("eval-rfnet", "--model", str(no_log), "--data", str(tiny_set))
    assert unknown.exit_code == 1 and "no train_log.json to read the product scale" in unknown.output
    refused = CliRunner().invoke(train_cli, ["rfnet", "--data", str(tiny_set), "--tiny", "--product-scale", "1.5",
                                             "--out", str(tmp_path / "bad")])
    assert refused.exit_code == 2 and "--product-scale" in refused.output
    # A resumed run keeps its placement: another scale would change the data half-way.
    resumed = _train("rfnet", "--data", str(tiny_set), "--tiny", "--epochs", "1", "--resume", "--product-scale", "0.75",
                     "--out", str(out))
    assert resumed.exit_code == 1 and "trained with --product-scale 0.5, not 0.75" in resumed.output


@pytest.mark.slow
def test_separate_backbones_train_load_and_export_with_parity(tiny_set, tiny_zoo, tmp_path):
    """--separate-backbones: one image backbone per input, in the saved config and weights; the folder
    loads, resolves as a model set's judge and exports to ONNX (export_onnx checks parity against
    PyTorch); with --init it is refused, naming both flags."""
    import torch

    from rfad.export.onnx_export import export_onnx
    from rfad.models.model_set import ModelSet
    from rfad.models.rfnet import RFNet

    out = tmp_path / "rfnet"
    result = _train("rfnet", "--data", str(tiny_set), "--tiny", "--epochs", "1", "--separate-backbones",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["shared_backbone"] is False
    model = RFNet.from_pretrained(out)
    assert len(model.image_backbones) == 4
    # The four backbones trained apart: no two hold the same weights.
    firsts = [next(b.parameters()).detach() for b in model.image_backbones]
    assert all(not torch.equal(firsts[i], firsts[j]) for i in range(4) for j in range(i + 1, 4))

    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    shutil.rmtree(zoo / "rfnet")
    shutil.copytree(out, zoo / "rfnet", ignore=shutil.ignore_patterns("checkpoints", "logs"))
    manifest = export_onnx(ModelSet.resolve(zoo), tmp_path / "onnx", components=["rfnet"], echo=lambda *_: None)
    assert "rfnet" in manifest.files

    refused = CliRunner().invoke(train_cli, ["rfnet", "--data", str(tiny_set), "--tiny", "--separate-backbones",
                                             "--init", str(out), "--out", str(tmp_path / "again")])
    assert refused.exit_code != 0 and "--separate-backbones" in refused.output and "--init" in refused.output
