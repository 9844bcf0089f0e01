"""Tiny real diffusers components built from config with fixed seeds, as diffusers' own tests do.

The shapes follow SD 1.x (VAE factor 8, 4 latent channels, CLIP tokenizer with the real vocab),
only far smaller, so every code path runs in milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from modules.models.loaded import LoadedModel, ModelFamily
from modules.paths import CLIP_TOKENIZER_DIR

TEXT_DIM = 32


def tiny_components(seed: int = 0, in_channels: int = 4) -> dict:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_DIM,
        attention_head_dim=4, norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407,
    ))
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, steps_offset=1)
    return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
                tokenizer=CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR), scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def tiny_pipeline(seed: int = 0, in_channels: int = 4) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(**tiny_components(seed, in_channels))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_loaded_model(seed: int = 0, in_channels: int = 4, name: str = "tiny") -> LoadedModel:
    return LoadedModel(title=f"{name} [0123456789]", name=name, family=ModelFamily.SD1,
                       pipe=tiny_pipeline(seed, in_channels), native_size=64, short_hash="0123456789")


def save_tiny_model_dir(path: Path, seed: int = 0, in_channels: int = 4) -> Path:
    """A diffusers-format folder, as a user would drop into models/Stable-diffusion."""
    tiny_pipeline(seed, in_channels).save_pretrained(path, safe_serialization=True)
    return path


class FixedProvider:
    """A ModelProvider over already-built models, for engine tests (the registry has its own)."""

    def __init__(self, *models: LoadedModel) -> None:
        self.models = {m.name: m for m in models}
        self.default = models[0]

    def get(self, checkpoint=None, vae=None) -> LoadedModel:
        if checkpoint is None:
            return self.default
        return self.models[checkpoint]
