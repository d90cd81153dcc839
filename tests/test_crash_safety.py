"""Training and data preparation killed with SIGKILL at random moments: the newest checkpoint is
always whole and verifiable, and resuming gives exactly the uninterrupted result.

Each run is a real subprocess (``python -m rfad.trainer.cli ...``, ``rfad-data prepare``) killed
without warning once it has written at least one checkpoint (or map), after a random extra
delay drawn from a seeded RNG, so the kill lands anywhere: mid-step, mid-checkpoint, mid-save.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rfad.trainer.checkpoints import checkpoint_folders, verify_checkpoint
from rfad.trainer.data.manifest import read_manifest
from rfad.trainer.data.synth import write_synthetic_dataset

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(command: list[str], cwd: Path) -> None:
    """A whole run in a subprocess: every run of a comparison uses the same thread count (ENV),
    since float reductions differ between 1 and 2 threads."""
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _identical(a: Path, b: Path, name: str) -> bool:
    x, y = load_file(str(a / name)), load_file(str(b / name))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _kill_after_first(command: list[str], ready, rng: random.Random, cwd: Path, max_delay_s: float) -> bool:
    """Start ``command``; once ``ready()`` is true, wait a random 0..max_delay_s and SIGKILL it.
    Returns True if the kill landed (False: the run finished first)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=cwd)
    try:
        deadline = time.monotonic() + 300
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, max_delay_s))
        if process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        return True
    finally:
        if process.poll() is None:
            process.kill()


def _assert_checkpoints_whole(out: Path) -> None:
    """Every checkpoint under a final name verifies (hashes match); only temporaries may be partial."""
    folders = checkpoint_folders(out)
    assert folders, "no checkpoint was written before the kill"
    for folder in folders:
        verify_checkpoint(folder)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("crash-data") / "data", 60, seed=3, size=64).parent


def test_rfnet_training_killed_at_random_points_resumes_to_the_same_weights(data, tmp_path):
    common = [sys.executable, "-m", "rfad.trainer.cli", "rfnet", "--data", str(data), "--tiny", "--epochs", "2",
              "--batch-size", "3", "--grad-accum", "2", "--checkpoint-steps", "1"]
    whole = tmp_path / "whole"
    _run(common + ["--out", str(whole)], tmp_path)

    out = tmp_path / "killed"
    rng = random.Random(7)
    command = common + ["--out", str(out)]
    kills = 0
    for _ in range(3):  # killed, resumed and killed again
        before = checkpoint_folders(out)
        newest = before[-1].name if before else ""
        resume = ["--resume"] if before else []
        ready = lambda: bool(checkpoint_folders(out)) and checkpoint_folders(out)[-1].name > newest  # noqa: E731
        if _kill_after_first(command + resume, ready, rng, tmp_path, 2.0):
            kills += 1
            _assert_checkpoints_whole(out)
    assert kills >= 1
    _run(command + ["--resume"], tmp_path)
    assert _identical(whole, out, "model.safetensors")


def test_rfft_killed_at_a_random_point_resumes_to_the_same_controlnet(tiny_zoo, data, tmp_path):
    from rfad.models.rfnet import RFNet, tiny_rfnet_config
    from rfad.tiny.tokenizers import build_roberta_tokenizer

    rfnet_dir = tmp_path / "rfnet"
    tokenizer = build_roberta_tokenizer()
    config = tiny_rfnet_config()
    config.roberta["vocab_size"] = len(tokenizer)
    torch.manual_seed(0)
    RFNet(config).save_pretrained(rfnet_dir)
    tokenizer.save_pretrained(rfnet_dir)

    flags = ["--models", str(tiny_zoo), "--rfnet", str(rfnet_dir), "--data", str(data), "--size", "64",
             "--ddim-steps", "3", "--last-k", "2", "--batch-size", "1", "--split", "all", "--steps", "4",
             "--checkpoint-steps", "1", "--lr", "1e-2", "--seed", "2"]
    script = tmp_path / "rfft.py"
    script.write_text("from rfad.trainer.rfft.commands import rfft\nrfft()\n")
    whole = tmp_path / "whole"
    _run([sys.executable, str(script), *flags, "--out", str(whole)], tmp_path)

    out = tmp_path / "killed"
    landed = _kill_after_first([sys.executable, str(script), *flags, "--out", str(out)],
                               lambda: bool(checkpoint_folders(out)), random.Random(3), tmp_path, 1.5)
    if landed:
        _assert_checkpoints_whole(out)
    _run([sys.executable, str(script), *flags, "--out", str(out), "--resume"], tmp_path)
    assert _identical(whole, out, "diffusion_pytorch_model.safetensors")


def test_prepare_killed_midway_completes_on_rerun_with_identical_maps(tmp_path):
    from transformers import DPTImageProcessor

    from rfad.tiny.zoo import build_tiny_u2net, tiny_dpt

    tiny_dpt(0).save_pretrained(tmp_path / "dpt", safe_serialization=True)
    DPTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "dpt")
    build_tiny_u2net(0).save_pretrained(tmp_path / "u2net")
    manifest = write_synthetic_dataset(tmp_path / "data", 48, seed=5, size=64)
    command = [str(Path(sys.executable).parent / "rfad-data"), "prepare", "--manifest", str(manifest), "--depth",
               str(tmp_path / "dpt"), "--saliency", str(tmp_path / "u2net"), "--batch-size", "4", "--device", "cpu"]
    clean = tmp_path / "clean" / "manifest.jsonl"
    _run(command + ["--out", str(clean.parent)], tmp_path)

    out = tmp_path / "killed"
    command += ["--out", str(out)]
    landed = _kill_after_first(command, lambda: any((out / "saliency").glob("*.png")) if out.exists() else False,
                               random.Random(11), tmp_path, 0.5)
    assert landed, "prepare finished before it could be killed; give it more rows"
    assert not (out / "manifest.jsonl").exists()  # the manifest is written last
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already there" in done.stdout
    assert read_manifest(out / "manifest.jsonl") == read_manifest(clean)
    for kind in ("depth", "saliency"):
        names = sorted(p.name for p in (clean.parent / kind).glob("*.png"))
        assert names == sorted(p.name for p in (out / kind).glob("*.png"))
        assert all((clean.parent / kind / n).read_bytes() == (out / kind / n).read_bytes() for n in names)
    assert not list(out.rglob("*.partial"))
