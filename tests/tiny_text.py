"""Tiny real CLIP text encoders built from config with fixed seeds, and the real tokenizer.

Shapes follow SD (vocab 49408, 77 positions); everything else is tiny so tests run in milliseconds.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from modules.models.loaded import LoadedModel, ModelFamily
from modules.paths import CLIP_TOKENIZER_DIR

HIDDEN = 32
PROJECTION = 32


def _config(**overrides) -> CLIPTextConfig:
    kwargs = dict(vocab_size=49408, hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
                  eos_token_id=49407, pad_token_id=49407)
    kwargs.update(overrides)
    return CLIPTextConfig(**kwargs)


def tiny_tokenizer(pad_token: str | None = None) -> CLIPTokenizer:
    if pad_token is None:
        return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)
    return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR, pad_token=pad_token)


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(_config()).eval()


def tiny_text_encoder_with_projection(seed: int = 1) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(_config(projection_dim=PROJECTION, pad_token_id=0)).eval()


def tiny_sd1_model(seed: int = 0) -> LoadedModel:
    """A LoadedModel whose pipe holds only what text conditioning reads (no UNet weights)."""
    encoder = tiny_text_encoder(seed)
    pipe = SimpleNamespace(tokenizer=tiny_tokenizer(), text_encoder=encoder,
                           unet=SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32))
    return LoadedModel(title="tiny-text [0]", name="tiny-text", family=ModelFamily.SD1, pipe=pipe,
                       native_size=64)


def tiny_sdxl_model(seed: int = 0) -> LoadedModel:
    """SDXL-shaped text side: CLIP-L-like + bigG-like (with projection; pads with "!")."""
    pipe = SimpleNamespace(
        tokenizer=tiny_tokenizer(), text_encoder=tiny_text_encoder(seed),
        tokenizer_2=tiny_tokenizer(pad_token="!"),
        text_encoder_2=tiny_text_encoder_with_projection(seed + 1),
        unet=SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32),
    )
    return LoadedModel(title="tiny-xl-text [0]", name="tiny-xl-text", family=ModelFamily.SDXL,
                       pipe=pipe, native_size=64)
