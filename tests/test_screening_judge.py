"""A screening judge of its own: the x0-preview dataset, an RFNet fine-tuned on it, and that RFNet
screening in process and served (the model set's screen_rfnet), on the tiny zoo."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from rfad.canvas import CanvasSpec, prepare_canvas
from rfad.models.diffusion import load_diffusion_models
from rfad.models.folders import ModelFolderError
from rfad.models.judge import load_judge_models
from rfad.models.model_set import ModelSet
from rfad.pipeline.generate import generate
from rfad.pipeline.judge import RunnerJudge
from rfad.pipeline.settings import GenerationSettings
from rfad.pipeline.torch_runner import TorchRunner
from rfad.trainer.data.manifest import read_manifest
from rfad.trainer.data.miniworld import MiniworldSettings, generate_for_product, product_requests
from rfad.miniworld.oracle import label_ad
from rfad.trainer.data.previews import PreviewSettings

STEPS = 4
SIZE = 64  # the served test's canvas
WORLD = MiniworldSettings(seed=3, steps=STEPS, images_per_product=2, val_fraction=0.0, test_fraction=0.0)
SETTINGS = PreviewSettings(WORLD, screen_at=0.5)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two torch threads on two shared cores spin against each other (10x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runner(tiny_zoo):
    model_set = ModelSet.resolve(tiny_zoo)
    return TorchRunner(load_diffusion_models(model_set), judge=load_judge_models(model_set))


@pytest.fixture(scope="module")
def previews(tiny_zoo, tmp_path_factory):
    """`rfad-data previews` on the tiny zoo (generator and judge): 2 products x 2 candidates, steps 4, previews at 2."""
    from click.testing import CliRunner

    from rfad.trainer.data.cli import main

    out = tmp_path_factory.mktemp("previews")
    result = CliRunner().invoke(main, [
        "previews", "--out", str(out), "--n", "4", "--screen-at", str(SETTINGS.screen_at), "--models", str(tiny_zoo),
        "--seed", str(WORLD.seed), "--steps", str(STEPS), "--images-per-product", "2", "--val-fraction", "0",
        "--test-fraction", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "wrote 4 previews at step 2 of 4 of 2 products" in result.output
    return out


def test_the_preview_settings_are_checked_naming_the_flag():
    with pytest.raises(ValueError, match=r"^screen-at: .*rounds to step 0"):
        PreviewSettings(WORLD, screen_at=0.1)


@pytest.fixture(scope="module")
def screen_rfnet(previews, tiny_zoo, tmp_path_factory):
    """The zoo's RFNet fine-tuned on the previews (rfad-train rfnet --tiny --init)."""
    from rfad.trainer.rfnet.train import RFNetTrainConfig, train_rfnet

    out = tmp_path_factory.mktemp("screen-rfnet") / "rfnet"
    train_rfnet(RFNetTrainConfig(data=str(previews), out=str(out), tiny=True, epochs=2, lr=1e-2, batch_size=4,
                                 depth=str(tiny_zoo / "dpt"), saliency=str(tiny_zoo / "u2net"),
                                 init=str(tiny_zoo / "rfnet")), echo=lambda *_: None)
    return out


def test_previews_are_the_loops_previews_labelled_by_the_final_images_oracle(previews, runner):
    rows = read_manifest(previews / "manifest.jsonl", strict_labels=True)
    labels = [json.loads(line) for line in (previews / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == len(labels) == 4 and [entry["step"] for entry in labels] == [2] * 4
    assert {row.split for row in rows} == {"train"}
    scenes = product_requests(2, WORLD.seed, WORLD.available_share)
    for p, scene in enumerate(scenes):
        # The final images are RF-mini's own: its generation function, the same seeds.
        rf_mini = generate_for_product(runner, scene, 2, WORLD.seed * 10_000_000 + p * 2, STEPS, WORLD.guidance)
        for j, (seed, image, verdict, _latents) in enumerate(rf_mini):
            row, entry = rows[2 * p + j], labels[2 * p + j]
            final = np.asarray(Image.open(previews / "finals" / f"{row.id}.png"))
            preview = np.asarray(Image.open(previews / row.generated))
            assert entry["seed"] == seed and np.array_equal(final, image)
            assert row.label == entry["label"] == verdict.label == label_ad(
                final, np.asarray(scene.canvas.product_rgba), scene.canvas.product_alpha).label
            assert preview.shape == final.shape and not np.array_equal(preview, final)
    judge = RunnerJudge(runner)
    state = judge.prepare(scenes[0].canvas, scenes[0].caption)
    first = np.array(Image.open(previews / rows[0].generated))[None]
    assert abs(judge(first, state)[0, 0] - labels[0]["p_available_preview"]) < 1e-5


def test_previews_of_a_given_world_take_its_products_and_splits_and_leave_out_its_test_products(runner, tmp_path):
    from rfad.trainer.data.miniworld import product_splits
    from rfad.trainer.data.previews import write_preview_dataset

    world = MiniworldSettings(seed=3, steps=STEPS, images_per_product=1, val_fraction=0.25, test_fraction=0.25)
    settings = PreviewSettings(world, screen_at=0.5, world_products=8)
    splits = product_splits(8, world.seed, world.val_fraction, world.test_fraction)
    outside_test = [p for p in range(8) if splits[p] != "test"]
    with pytest.raises(ValueError, match=r"^n: 7 previews need 7 products; the 8-product world has 6 outside its test"):
        write_preview_dataset(tmp_path / "too-many", 7, runner, RunnerJudge(runner), settings)
    summary = write_preview_dataset(tmp_path / "previews", 6, runner, RunnerJudge(runner), settings)
    labels = [json.loads(line) for line in (tmp_path / "previews" / "labels.jsonl").read_text().splitlines()]
    rows = read_manifest(tmp_path / "previews" / "manifest.jsonl", strict_labels=True)
    assert [entry["product"] for entry in labels] == outside_test  # in the stream's order, none of its test split
    assert [row.split for row in rows] == [splits[p] for p in outside_test] and {"train", "val"} == {r.split for r in rows}
    # The scenes are that world's, not those of a 6-product stream.
    scenes = product_requests(8, world.seed, world.available_share)
    assert [row.prompt for row in rows] == [scenes[p].prompt for p in outside_test]
    assert summary["settings"]["world_products"] == 8 and summary["products"] == 6
    with pytest.raises(ValueError, match="world-products: must be at least 1"):
        PreviewSettings(world, screen_at=0.5, world_products=0)


def test_a_screening_rfnet_screens_in_process_and_must_match_the_judge(runner, screen_rfnet, tiny_zoo, tmp_path):
    model_set = ModelSet.resolve(tiny_zoo).with_overrides(screen_rfnet=screen_rfnet)
    screening = TorchRunner(runner.models, judge=load_judge_models(model_set))
    assert screening.info.screen_judge and not runner.info.screen_judge
    scene = product_requests(1, WORLD.seed, WORLD.available_share)[0]
    settings = GenerationSettings(steps=STEPS, max_attempts=1, threshold=1.0, screen_at=0.5, screen_threshold=1.0)
    seen = []
    result = generate(screening, scene.canvas, scene.prompt, settings, caption=scene.caption,
                      judge=RunnerJudge(screening), screen_judge=RunnerJudge(screening, screen=True),
                      on_preview=seen.append)
    assert [c.seed for c in result.screened] == [0, 1] and [c.seed for c in result.candidates] == [2]
    main, screen = RunnerJudge(screening), RunnerJudge(screening, screen=True)
    images = np.stack([preview.image for preview in seen])
    by_screen = screen(images, screen.prepare(scene.canvas, scene.caption))
    by_main = main(images, main.prepare(scene.canvas, scene.caption))
    assert np.allclose([c.probabilities for c in result.screened], by_screen, atol=1e-6)
    assert not np.allclose(by_screen, by_main, atol=1e-3)  # fine-tuning moved it: the screening RFNet judged
    # The final judge is still the main RFNet.
    final = main(result.candidates[0].image[None], main.prepare(scene.canvas, scene.caption))
    assert np.allclose(result.candidates[0].probabilities, final[0], atol=1e-6)
    with pytest.raises(ValueError, match="no screening RFNet"):
        RunnerJudge(runner, screen=True)

    # Another caption tokenizer than the judge's is refused, naming the role.
    other = tmp_path / "other-tokens"
    shutil.copytree(screen_rfnet, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(vocab)[10:12]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelFolderError, match="screen_rfnet: .* another caption tokenizer"):
        load_judge_models(model_set.with_overrides(screen_rfnet=other))


def _with_screen_components(tiny_onnx, model_set, folder):
    """The session's export of the tiny zoo plus the screening RFNet's two graphs, exported alone
    (``rfad-export onnx --components screen_rfnet_text,screen_rfnet``) and added to its manifest,
    as one export of the whole set would have written them (checked: the same facts but the flag)."""
    import dataclasses
    import os

    from rfad.components.manifest import ExportManifest
    from rfad.export.onnx_export import export_onnx

    screen = export_onnx(model_set, folder / "screen-onnx", ["screen_rfnet_text", "screen_rfnet"],
                         echo=lambda *_: None)
    base = ExportManifest.read(tiny_onnx / "manifest.json", "tiny_onnx")
    assert screen.facts.screen_rfnet and dataclasses.replace(screen.facts, screen_rfnet=False) == base.facts
    combined = folder / "onnx"
    shutil.copytree(tiny_onnx, combined, copy_function=os.link)
    for name in screen.specs:
        shutil.copytree(folder / "screen-onnx" / name, combined / name)
    # The copy's files are hard links to the session's export: writing the manifest in place would
    # rewrite the session's own (and every later test would look for the screening graphs there).
    (combined / "manifest.json").unlink()
    dataclasses.replace(base, facts=screen.facts, specs={**base.specs, **screen.specs},
                        files={**base.files, **screen.files}).write(combined / "manifest.json")
    return combined


def test_a_served_repository_with_a_screening_rfnet_screens_with_it(runner, screen_rfnet, tiny_zoo, tiny_onnx,
                                                                   tmp_path):
    """The screening RFNet exported (screen_rfnet_text, screen_rfnet) screens in the onnxruntime
    runner and in the served pipeline, with the p of the torch runner's screening RFNet."""
    from rfad.client import RfadClient
    from rfad.export.triton_repo import write_triton_repo
    from rfad.pipeline.onnx_runner import OnnxRunner
    from rfad.serving.launcher import TritonServer

    model_set = ModelSet.resolve(tiny_zoo).with_overrides(screen_rfnet=screen_rfnet)
    onnx_dir = _with_screen_components(tiny_onnx, model_set, tmp_path)
    scene = product_requests(1, WORLD.seed, WORLD.available_share)[0]
    buffer = io.BytesIO()
    scene.product.save(buffer, format="PNG")
    canvas = prepare_canvas(buffer.getvalue(), CanvasSpec(width=SIZE, height=SIZE))  # as the server places it
    local = TorchRunner(runner.models, judge=load_judge_models(model_set))
    settings = GenerationSettings(steps=STEPS, max_attempts=1, threshold=1.0, screen_at=0.5, screen_threshold=1.0)
    reference = generate(local, canvas, scene.prompt, settings, caption=scene.caption,
                         judge=RunnerJudge(local), screen_judge=RunnerJudge(local, screen=True))
    onnx = OnnxRunner(onnx_dir, merged=True)
    ours = generate(onnx, canvas, scene.prompt, settings, caption=scene.caption, judge=RunnerJudge(onnx),
                    screen_judge=RunnerJudge(onnx, screen=True))
    assert np.allclose([c.p_available for c in ours.screened], [c.p_available for c in reference.screened], atol=1e-4)

    repo = write_triton_repo(onnx_dir, tmp_path / "repo", canvas_size=SIZE)
    assert (repo / "screen_rfnet" / "config.pbtxt").is_file()
    with TritonServer(repo, grpc_port=0, http_port=0, metrics_port=0) as server:
        result = RfadClient(server.grpc_url, retries=0).generate(
            buffer.getvalue(), scene.prompt, caption=scene.caption, steps=STEPS, max_attempts=1, threshold=1.0,
            screen_at=0.5, screen_threshold=1.0)
    assert result.screened_seeds == [0, 1] and result.seeds == [2]
    assert np.allclose(result.screened_p, [c.p_available for c in reference.screened], atol=1e-4)
