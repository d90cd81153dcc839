"""Model loading from local folders and the tiny zoo: round trips, seeds, clear errors, LoRA fusing."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from rfad.models.diffusion import check_sd_folder, load_controlnet, load_diffusion_models
from rfad.models.folders import ModelFolderError
from rfad.models.model_set import MODEL_SET_FILE, ModelSet
from rfad.tiny import zoo as tiny
from rfad.tiny.tokenizers import build_clip_tokenizer, build_roberta_tokenizer


def _unet_inputs(channels=4):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, channels, 8, 8, generator=g), torch.tensor([10, 500]),
            torch.randn(2, 77, tiny.CROSS_ATTENTION_DIM, generator=g))


def test_zoo_round_trip_gives_identical_outputs(tiny_zoo):
    """Models built in memory under the zoo seed equal the ones saved and loaded back from disk."""
    models = load_diffusion_models(ModelSet.resolve(tiny_zoo))
    sample, t, text = _unet_inputs()
    with torch.no_grad():
        assert torch.equal(tiny.tiny_unet(4, seed=0)(sample, t, text).sample, models.unet(sample, t, text).sample)
        unet = tiny.tiny_unet(4, seed=0)
        control = torch.rand(2, 3, 64, 64)
        down, mid = tiny.tiny_controlnet(unet, seed=0)(sample, t, text, control, return_dict=False)
        down2, mid2 = models.controlnet(sample, t, text, control, return_dict=False)
        assert all(torch.equal(a, b) for a, b in zip(list(down) + [mid], list(down2) + [mid2]))
        ids = models.tokenizer(["a red mug"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        assert torch.equal(tiny.tiny_text_encoder(build_clip_tokenizer())(ids)[0], models.text_encoder(ids)[0])
        image = torch.rand(1, 3, 64, 64) * 2 - 1
        assert torch.equal(tiny.tiny_vae(seed=0).encode(image).latent_dist.mean, models.vae.encode(image).latent_dist.mean)
    # The ControlNet's residuals are non-zero, so parity tests downstream are not vacuous.
    assert all(r.abs().max() > 1e-3 for r in list(down2) + [mid2])


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = tiny.tiny_unet(4, seed=3), tiny.tiny_unet(4, seed=3), tiny.tiny_unet(4, seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_zoo_shapes_match_sd15(tiny_zoo):
    models = load_diffusion_models(ModelSet.resolve(tiny_zoo).with_overrides(sd=tiny_zoo / "sd15-inpaint"))
    assert models.unet.config.in_channels == 9
    assert 2 ** (len(models.vae.config.block_out_channels) - 1) == 8  # SD's downscale factor
    assert models.tokenizer.model_max_length == 77
    assert models.scheduler_config["beta_schedule"] == "scaled_linear"
    latents = models.vae.encode(torch.rand(1, 3, 64, 64)).latent_dist.mean
    assert latents.shape == (1, 4, 8, 8)


def test_transformers_models_of_the_zoo_load(tiny_zoo):
    from transformers import AutoTokenizer, DPTForDepthEstimation, ResNetModel, RobertaModel

    roberta = RobertaModel.from_pretrained(tiny_zoo / "roberta", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_zoo / "roberta", local_files_only=True)
    batch = tokenizer(["red ceramic mug 350ml"], return_tensors="pt")
    assert roberta(**batch).last_hidden_state.shape[-1] == roberta.config.hidden_size
    assert ResNetModel.from_pretrained(tiny_zoo / "resnet")(torch.rand(1, 3, 64, 64)).last_hidden_state.ndim == 4
    assert DPTForDepthEstimation.from_pretrained(tiny_zoo / "dpt")(torch.rand(1, 3, 64, 64)).predicted_depth.shape[0] == 1


def test_tokenizers_are_deterministic_and_round_trip(tmp_path):
    clip = build_clip_tokenizer()
    clip.save_pretrained(tmp_path / "clip")
    from transformers import CLIPTokenizer

    loaded = CLIPTokenizer.from_pretrained(tmp_path / "clip")
    text = "a perfume bottle on a stone podium, studio lighting"
    assert loaded(text).input_ids == clip(text).input_ids == build_clip_tokenizer()(text).input_ids
    assert len(clip(text).input_ids) < 20  # merges make words single tokens, as a real vocabulary does
    assert build_roberta_tokenizer().get_vocab() == build_roberta_tokenizer().get_vocab()


def test_missing_and_incomplete_folders_list_what_is_missing(tiny_zoo, tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        ModelSet.resolve(tmp_path / "nope")
    broken = tmp_path / "sd"
    shutil.copytree(tiny_zoo / "sd15", broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(ModelFolderError) as info:
        check_sd_folder(broken)
    assert "unet/" in str(info.value) and "tokenizer/" in str(info.value) and "vae" not in str(info.value)
    with pytest.raises(ModelFolderError, match="neither a model set"):
        ModelSet.resolve(tmp_path)
    (tmp_path / "cn").mkdir()
    (tmp_path / "cn" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelFolderError, match="config.json.*pickles are not loaded"):
        load_controlnet(tmp_path / "cn")
    with pytest.raises(ModelFolderError, match="--sd-config"):
        ModelSet.resolve(tiny_zoo).require("sd_config")


def test_model_set_resolution(tiny_zoo, tmp_path):
    zoo = ModelSet.resolve(tiny_zoo)
    assert zoo.sd == (tiny_zoo / "sd15").resolve() and zoo.controlnet == (tiny_zoo / "controlnet").resolve()
    plain = ModelSet.resolve(tiny_zoo / "sd15")  # a plain diffusers folder, no ControlNet inside
    assert plain.sd == zoo.sd and plain.controlnet is None
    assert zoo.with_overrides(controlnet=tmp_path).controlnet == tmp_path.resolve()
    bad = tmp_path / "set"
    bad.mkdir()
    (bad / MODEL_SET_FILE).write_text(json.dumps({"sd": "x", "unet3d": "y"}))
    with pytest.raises(ModelFolderError, match="unknown roles"):
        ModelSet.resolve(bad)


def test_single_file_checkpoint_needs_a_local_config(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    with pytest.raises(ModelFolderError, match="--sd-config"):
        load_diffusion_models(ModelSet.resolve(checkpoint).with_overrides(controlnet=tmp_path))


def write_tiny_lora(unet, path: Path, seed: int = 0, rank: int = 4, std: float = 0.2) -> Path:
    """Save a random-weight LoRA on the attention projections of ``unet`` to ``path`` (.safetensors),
    in diffusers' LoRA file format: what the LoRA-fusing test loads.

    ``unet`` is left untouched (the adapter goes on a copy). peft initialises LoRA's
    B matrices to zero, which would make the LoRA a no-op; they are drawn at random instead.
    """
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    unet = copy.deepcopy(unet)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                     adapter_name="tiny_lora")
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, std)
    layers = get_peft_model_state_dict(unet, adapter_name="tiny_lora")
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name,
                                              safe_serialization=True)
    return path


def test_lora_is_fused_into_the_unet(tiny_zoo, tmp_path):
    base = load_diffusion_models(ModelSet.resolve(tiny_zoo))
    lora = write_tiny_lora(base.unet, tmp_path / "lora" / "tiny.safetensors")
    fused = load_diffusion_models(ModelSet.resolve(tiny_zoo).with_overrides(lora=lora, lora_scale=0.8))
    half = load_diffusion_models(ModelSet.resolve(tiny_zoo).with_overrides(lora=lora, lora_scale=0.4))
    sample, t, text = _unet_inputs()
    with torch.no_grad():
        out_base, out_fused, out_half = (m.unet(sample, t, text).sample for m in (base, fused, half))
    assert fused.unet.state_dict().keys() == base.unet.state_dict().keys()  # plain weights, no adapter left
    assert (out_fused - out_base).abs().max() > 1e-4
    # Fusing is linear in the scale for the projection weights.
    key = next(k for k in base.unet.state_dict() if k.endswith("attn1.to_q.weight"))
    w0, w1, w2 = (m.unet.state_dict()[key] for m in (base, half, fused))
    assert torch.allclose(w2 - w0, 2 * (w1 - w0), atol=1e-6)
    pickled = tmp_path / "lora" / "x.bin"
    pickled.write_bytes(b"pickle")
    with pytest.raises(ModelFolderError, match="safetensors"):
        load_diffusion_models(ModelSet.resolve(tiny_zoo).with_overrides(lora=pickled))
