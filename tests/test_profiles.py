"""Deployment profiles: the rules that tie their numbers together, the arithmetic they were sized
with (parameter counts recounted from the architectures), and the docs table generated from them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rfad.canvas import CanvasSpec
from rfad.contract import MAX_COMPONENT_BATCH
from rfad.deploy.memory import PARAMETERS, SD15_FACTS, shm_need, weight_bytes
from rfad.deploy.profiles import CPU, DATACENTER, EDGE, GIB, PROFILES, get_profile
from rfad.pipeline.settings import GenerationSettings


def test_cpu_is_what_rfad_serve_runs_today():
    assert CPU.backend == "python" and CPU.precision == "fp32" and CPU.engines is None and not CPU.gpu
    assert CPU.pipeline.default_steps == GenerationSettings().steps
    assert CPU.pipeline.canvas_size == CanvasSpec().width
    # The pipeline parameters a repository gets without a profile are the cpu profile's.
    from rfad.serving.pipeline_parameters import PipelineParameters

    defaults = PipelineParameters()
    assert (CPU.pipeline.max_attempts_cap, CPU.pipeline.canvas_size, CPU.pipeline.default_steps,
            CPU.pipeline.candidates_cap) == (defaults.max_attempts_cap, defaults.canvas_size, defaults.default_steps,
                                             defaults.candidates_cap)
    assert all(CPU.component(name).max_batch_size == MAX_COMPONENT_BATCH for name in PARAMETERS)
    assert CPU.kubernetes is None and CPU.shm.dev_shm_bytes is None


def test_edge_and_datacenter_engines_are_the_issue_s_shapes():
    assert EDGE.engines.static_image and EDGE.engines.image == (512, 512, 512) and EDGE.engines.batch[2] == 2
    assert DATACENTER.engines.image == (256, 512, 768) and DATACENTER.engines.batch[::2] == (1, 16)
    assert EDGE.precision == DATACENTER.precision == "fp16" and EDGE.gpu and DATACENTER.gpu
    # The denoiser gets more instances than the rest on a datacenter GPU.
    assert DATACENTER.component("controlnet_unet").count == 2 and DATACENTER.component("vae_decoder").count == 1


@pytest.mark.parametrize("change, message", [
    (lambda p: dataclasses.replace(p, pipeline=dataclasses.replace(p.pipeline, candidates_cap=2)),
     "below the largest batch the pipeline sends (4"),
    (lambda p: dataclasses.replace(p, engines=dataclasses.replace(p.engines, batch=(1, 1, 1))),
     "exceeds the engines' largest batch 1"),
    (lambda p: dataclasses.replace(p, pipeline=dataclasses.replace(p.pipeline, canvas_size=768)),
     "canvas_size 768 is outside the engines' image range (512, 512, 512)"),
    (lambda p: dataclasses.replace(p, precision="int8"), "precision 'int8'"),
    (lambda p: dataclasses.replace(p, shm=dataclasses.replace(p.shm, dev_shm_bytes=None)), "must size /dev/shm"),
    (lambda p: dataclasses.replace(p, components=dataclasses.replace(p.components, kind="KIND_TPU")), "KIND_TPU"),
])
def test_a_profile_that_cannot_work_is_refused_naming_the_rule(change, message):
    with pytest.raises(ValueError, match="profile 'edge': .*" + __import__("re").escape(message)):
        change(EDGE)


def test_unknown_profile_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^--profile: 'gpu' is not one of cpu, edge, datacenter$"):
        get_profile("gpu")


def test_parameter_counts_are_those_of_the_architectures():
    """Recount every component at its published size on the meta device (no memory, ~10 s)."""
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTConfig, DPTForDepthEstimation

    from rfad.components.modules import model_facts
    from rfad.models.rfnet import RFNet, RFNetConfig
    from rfad.models.u2net import U2NET_PARAM_COUNT

    def count(*modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # SD-1.5
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2)
        clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                            num_hidden_layers=12, max_position_embeddings=77))  # ViT-L/14 text
        dpt = DPTForDepthEstimation(DPTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                              intermediate_size=4096, neck_hidden_sizes=[256, 512, 1024, 1024],
                                              backbone_out_indices=[5, 11, 17, 23]))  # DPT-Large
        rfnet = RFNet(RFNetConfig())
        facts = model_facts(SimpleNamespace(text_encoder=clip, controlnet=controlnet, vae=vae, unet=unet,
                                            tokenizer=SimpleNamespace(model_max_length=77)))
    text = count(rfnet.text_encoder, rfnet.text_projection)
    assert PARAMETERS == {
        "text_encoder": count(clip), "unet": count(unet), "controlnet": count(controlnet),
        "controlnet_unet": count(controlnet, unet),
        "vae_encoder": count(vae.encoder, vae.quant_conv), "vae_decoder": count(vae.decoder, vae.post_quant_conv),
        "depth": count(dpt), "saliency": U2NET_PARAM_COUNT["full"], "rfnet_text": text, "rfnet": count(rfnet) - text,
    }
    # The specs' facts at SD-1.5 sizes are what `rfad-export onnx` probes from such models.
    assert dataclasses.replace(facts, rfnet_width=384) == SD15_FACTS


def test_weights_and_shared_memory_fit_each_profile():
    for profile in PROFILES.values():
        weights = sum(weight_bytes(profile).values())
        assert weights < profile.memory.model_bytes
        if profile.shm.dev_shm_bytes is not None:
            for backend in profile.backends:  # every backend the profile allows, ControlNet merged or not
                for mode in ("merged", "separate"):
                    if backend == "python" and mode == "separate" and profile is DATACENTER:
                        continue  # refused at export: 13 residuals of 16 x 768 px through python models
                    assert shm_need(profile, backend, mode).total <= profile.shm.dev_shm_bytes, (profile.name, backend, mode)
    # The arithmetic itself: fp16 SD-1.5 UNet + ControlNet is 2.27 GiB per instance.
    assert weight_bytes(EDGE)["controlnet_unet"] / GIB == pytest.approx(2.27, abs=0.01)
    assert weight_bytes(DATACENTER)["controlnet_unet"] == 2 * weight_bytes(EDGE)["controlnet_unet"]


def test_profiles_import_without_torch():
    code = "import sys, rfad.deploy.table; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name, flags, message", [
    ("edge", {"--max-batch": 4}, "--max-batch 4 contradicts --profile edge: max_batch_size 4 exceeds the engines' largest batch 2"),
    ("cpu", {"--backend": "tensorrt"}, "--backend tensorrt contradicts --profile cpu: the profile's backends are python, onnxruntime"),
    ("edge", {"--canvas-size": 768}, "--canvas-size 768 contradicts --profile edge: canvas_size 768 is outside"),
    ("cpu", {"--max-batch": 8}, "--max-batch 8 contradicts --profile cpu: max_batch_size 8 is below the largest batch"),
    ("datacenter", {"--max-attempts-cap": 3}, "--max-attempts-cap 3 contradicts --profile datacenter: max_attempts_cap 3 "
                                               "is below the default max_attempts 5"),
])
def test_a_flag_that_contradicts_the_profile_is_a_one_line_error(name, flags, message):
    from rfad.export.profile_flags import profile_with_flags

    with pytest.raises(ValueError) as caught:
        profile_with_flags(name, flags)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_flags_that_fit_refine_the_profile_and_are_recorded():
    from rfad.export.profile_flags import profile_with_flags

    profile, applied = profile_with_flags("datacenter", {"--backend": "onnxruntime", "--pipeline-instances": 4,
                                                         "--no-dynamic-batching": True, "--max-batch": None})
    assert applied == {"--backend": "onnxruntime", "--pipeline-instances": 4, "--no-dynamic-batching": True}
    assert profile.backend == "onnxruntime" and profile.pipeline.instances == 4
    assert all(serving.batching is None for serving in profile.servings())
    assert profile_with_flags("cpu", {"--backend": "python", "--max-batch": 16}) == (CPU, {})
