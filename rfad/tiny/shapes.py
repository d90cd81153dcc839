"""The sizes a random-weight zoo is built at: one :class:`ZooShape` per size, read by one builder.

- ``tiny`` (:func:`tiny_shape`): the smallest models of SD-1.5's architectures (UNet 1.4M
  parameters), built with the libraries' own initialisation; tests, CI and the demo run on it.
- ``sd15`` (:data:`SD15_SHAPE`): the published production sizes (SD-1.5 UNet 860M, ControlNet
  v1.1 canny 361M, VAE 84M, CLIP ViT-L/14 text 123M, DPT-Large, U2-Net full, RFNet on ResNet-50 +
  RoBERTa-base): a twin for rehearsing export, serving and memory plans before real weights
  arrive. Several GB on disk; never built in CI. Built with a seeded cheap initialisation
  (:mod:`rfad.tiny.init`): the libraries' initialisers would take minutes at this size.

Each field holds the arguments of the library's own config class (diffusers, transformers,
:class:`rfad.models.u2net_config.U2NetConfig`); token-id fields and, where a shape leaves them
out, the vocabulary and position counts come from the zoo's offline tokenizers at build time.
Torch-free: it is read to estimate sizes before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# SD-1.5's scheduler config as shipped with the real weights (PNDM; the loop builds DDIM from it).
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# Widths of the tiny U2-Net: same names as the official model, a few channels each, and
# deliberately non-uniform so that every width is plumbed through correctly.
TINY_U2NET_WIDTHS = {
    "encoder_mid_channels": (4, 4, 8, 8, 8, 8),
    "encoder_out_channels": (8, 8, 16, 16, 16, 16),
    "decoder_mid_channels": (4, 4, 4, 8, 8),
    "decoder_out_channels": (8, 8, 8, 16, 16),
}


def _tiny_rfnet_config():
    from rfad.models.rfnet import tiny_rfnet_config

    return tiny_rfnet_config()


def _default_rfnet_config():
    from rfad.models.rfnet import RFNetConfig

    return RFNetConfig()


@dataclass(frozen=True)
class ZooShape:
    """Sizes of every model of a zoo, as the arguments of each library's config class."""

    name: str
    clip: dict  # transformers CLIPTextConfig
    unet: dict  # diffusers UNet2DConditionModel, without in_channels (4, or 9 for the inpaint UNet)
    vae: dict  # diffusers AutoencoderKL
    controlnet_embedding: tuple[int, ...]  # ControlNetModel.from_unet conditioning_embedding_out_channels
    roberta: dict  # transformers RobertaConfig
    resnet: dict  # transformers ResNetConfig
    dpt: dict  # transformers DPTConfig
    depth_size: int  # the DPT image processor's input side
    u2net: dict  # rfad U2NetConfig
    rfnet: Callable[[], object] = _default_rfnet_config  # RFNetConfig factory (backbones come from the folders)
    inpaint_unet: bool = True  # also write sd15-inpaint/ (a 9-channel UNet beside the same VAE and CLIP)
    fast_init: bool = False  # seeded cheap init instead of the libraries' initialisers
    controlnet_output_std: float = 0.05  # std of the re-initialised zero convs (see random_controlnet)
    # Published parameter counts (role -> count) the built models must match within PARAMETER_TOLERANCE.
    published_parameters: dict = field(default_factory=dict)
    description: str = ""


PARAMETER_TOLERANCE = 0.005  # published counts are rounded to 3 significant digits


def tiny_shape(unet_channels: tuple[int, ...] = (32, 64), vae_channels: tuple[int, ...] = (32, 32, 64, 64),
               sample_size: int = 64, controlnet_output_std: float = 0.05, norm_num_groups: int = 32) -> ZooShape:
    """The tiny models; ``unet_channels`` widens the UNet (the benchmarks' "small" shape).

    ``norm_num_groups``: SD-1.5's 32 groups; with 32-channel blocks that is one channel per group,
    which normalises away each channel's mean over the image (a flat colour): the miniature
    world's trained UNet and VAE use fewer.
    """
    blocks = len(vae_channels)
    return ZooShape(
        name="tiny",
        clip={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4},
        unet={"sample_size": sample_size, "out_channels": 4, "block_out_channels": unet_channels, "layers_per_block": 2,
              "down_block_types": ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(unet_channels) - 1),
              "up_block_types": ("CrossAttnUpBlock2D",) * (len(unet_channels) - 1) + ("UpBlock2D",),
              "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": norm_num_groups},
        # Four blocks so the downscale factor is 8 like SD's: the ControlNet conditioning
        # embedding shrinks the control image by 8 and must land on the latent grid.
        vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": vae_channels,
             "down_block_types": ("DownEncoderBlock2D",) * blocks, "up_block_types": ("UpDecoderBlock2D",) * blocks,
             "layers_per_block": 1, "norm_num_groups": norm_num_groups, "sample_size": sample_size * 8, "scaling_factor": 0.18215},
        controlnet_embedding=(16, 32, 48, 64),
        roberta={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                 "type_vocab_size": 1},
        resnet={"embedding_size": 8, "hidden_sizes": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "layer_type": "basic"},
        dpt={"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 37,
             "image_size": 64, "patch_size": 8, "backbone_out_indices": [0, 1, 2, 3],
             "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16, "head_in_index": -1, "is_hybrid": False,
             # DPT's default init (std 0.02) through this many small layers gives depth values of
             # ~1e-9: a flat map. A wider init gives maps that vary with the image, like real depth.
             "initializer_range": 0.1},
        depth_size=64,
        u2net={"variant": "custom", **TINY_U2NET_WIDTHS},
        rfnet=_tiny_rfnet_config,
        controlnet_output_std=controlnet_output_std,
        description="tiny random-weight zoo",
    )


# The published configs: runwayml/stable-diffusion-v1-5 (unet/, vae/, text_encoder/ = CLIP ViT-L/14),
# lllyasviel/control_v11p_sd15_canny (ControlNetModel.from_unet of that UNet), Intel/dpt-large,
# U2-Net's u2net.pth, and RFNet's backbones microsoft/resnet-50 and roberta-base.
SD15_SHAPE = ZooShape(
    name="sd15",
    clip={"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768},
    unet={"sample_size": 64, "out_channels": 4, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
          "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
          "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
          "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32},
    vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512),
         "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
         "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215},
    controlnet_embedding=(16, 32, 96, 256),
    roberta={"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 514, "type_vocab_size": 1},
    resnet={},  # ResNetConfig() is ResNet-50
    dpt={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
         "image_size": 384, "patch_size": 16, "backbone_out_indices": [5, 11, 17, 23],
         "neck_hidden_sizes": [256, 512, 1024, 1024], "fusion_hidden_size": 256, "readout_type": "project",
         "is_hybrid": False, "qkv_bias": True},
    depth_size=384,
    u2net={"variant": "full"},
    inpaint_unet=False,  # the model set names no inpaint UNet; 3.4 GB more would rehearse nothing new
    fast_init=True,
    published_parameters={
        "unet": 859_520_964, "controlnet": 361_000_000, "vae": 83_653_863, "text_encoder": 123_060_480,
        "depth": 343_000_000, "saliency": 44_009_869, "resnet": 23_508_032,
        # roberta-base's 124,645,632 less its pooler (768 x 768 + 768), which RFNet does not build.
        "roberta": 124_055_040,
    },
    description="SD-1.5 shape twin (random weights at the published sizes); for rehearsing deployments",
)

SHAPES = {"tiny": tiny_shape(), "sd15": SD15_SHAPE}
