"""Model configurations and builders for the embedded default model.

The components mirror Stable Diffusion 1.x (AutoencoderKL with a downsampling factor of 8 and 4 latent
channels, a CLIP text encoder on the real CLIP BPE vocabulary, a cross-attention UNet, a scaled-linear
1000-step epsilon-prediction noise schedule), only much smaller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from modules.paths import CLIP_TOKENIZER_DIR

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_POSITIONS = 77
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407  # also the pad token, like SD 1.x


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the three networks. ``full`` is the shipped model; ``tiny`` is for tests."""

    sample_size: int = 64  # pixels
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)  # 4 blocks -> downsampling factor 8
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    unet_channels: tuple[int, ...] = (48, 96)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    unet_norm_groups: int = 16
    unet_transformer_layers: int = 1
    unet_cross_attn_levels: tuple[bool, ...] = field(default=(True, True))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        for k in ("vae_channels", "unet_channels", "unet_cross_attn_levels"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    "full": ModelConfig(),
    "tiny": ModelConfig(
        vae_channels=(8, 8, 8, 8),
        vae_norm_groups=1,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        text_intermediate=32,
        unet_channels=(16, 16),
        unet_heads=2,
        unet_norm_groups=8,
        unet_cross_attn_levels=(True, False),
    ),
}


def build_vae(cfg: ModelConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=4,
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=cfg.sample_size,
        scaling_factor=1.0,  # set from data after VAE training
    )
    # Start with a narrow posterior (std ~0.05 instead of ~1): with the default init the sampled
    # latents are mostly noise and the decoder takes many hundreds of steps to learn anything.
    with torch.no_grad():
        vae.quant_conv.bias[4:].fill_(-6.0)
    return vae


def build_text_encoder(cfg: ModelConfig) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=CLIP_MAX_POSITIONS,
        hidden_act="quick_gelu",
        projection_dim=cfg.text_hidden,
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=EOS_TOKEN_ID,
    )
    return CLIPTextModel(config)


def build_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    down, up = [], []
    for cross in cfg.unet_cross_attn_levels:
        down.append("CrossAttnDownBlock2D" if cross else "DownBlock2D")
    for cross in reversed(cfg.unet_cross_attn_levels):
        up.append("CrossAttnUpBlock2D" if cross else "UpBlock2D")
    latent = cfg.sample_size // 8
    return UNet2DConditionModel(
        sample_size=latent,
        in_channels=4,
        out_channels=4,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,  # diffusers' legacy name: this is the number of heads
        norm_num_groups=cfg.unet_norm_groups,
        transformer_layers_per_block=cfg.unet_transformer_layers,
    )


def build_scheduler() -> EulerAncestralDiscreteScheduler:
    """SD 1.x noise schedule; Euler a is the shipped default sampler (others via ``from_config``)."""
    return EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )


def load_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR))
