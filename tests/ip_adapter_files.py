"""Random-weight IP-Adapter files in h94's key layout, and tiny CLIP vision encoder files in the
transformers layout, sized to fit the tests' tiny UNets.

h94's layout: `image_proj.*` (plain: proj + norm; plus: the Resampler's latents, proj_in,
proj_out, norm_out and 4 blocks `layers.i.0.{norm1,norm2,to_q,to_kv,to_out}` + `layers.i.1.{0,1,3}`)
and `ip_adapter.<N>.to_k_ip.weight` / `to_v_ip.weight`, where N counts the UNet's attention
processors in diffusers' order and the cross-attention ones are the odd N (1, 3, 5, ...). The
`.safetensors` files hold the flat prefixed keys; the `.bin` files hold {"image_proj": {...},
"ip_adapter": {...}}.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

CLIP_IMAGE = 224


def _rand(shape: tuple[int, ...], gen: torch.Generator, kind: str = "weight") -> torch.Tensor:
    base = torch.randn(shape, generator=gen)
    if kind == "norm_weight":
        return 1.0 + 0.1 * base
    if kind == "bias":
        return 0.02 * base
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return base / math.sqrt(max(fan_in, 1))


def cross_attention_layers(unet) -> list[tuple[int, int, int]]:
    """(file layer number, inner width, cross-attention width) of each cross-attention layer, in
    diffusers' attn_processors order, numbered 1, 3, 5, ... as the released files are."""
    out, n = [], 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        attn = unet.get_submodule(name[: -len(".processor")])
        out.append((n, attn.to_k.weight.shape[0], attn.to_k.weight.shape[1]))
        n += 2
    return out


def meta_unet(config: dict):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return UNet2DConditionModel.from_config(config)


def ip_adapter_state(unet, *, kind: str = "plain", image_embed_dim: int = 32, seed: int = 0, tokens: int = 4,
                     resampler_width: int = 32) -> dict[str, torch.Tensor]:
    """A flat h94-layout state dict for `unet` (a UNet2DConditionModel, real or on the meta device).
    kind "plain": ip-adapter_sd15-like (4 tokens from the projected image embedding);
    "plus": ip-adapter-plus-like (a Resampler over the encoder's hidden states, `tokens` queries)."""
    gen = torch.Generator().manual_seed(seed)
    layers = cross_attention_layers(unet)
    cross = layers[0][2]
    sd: dict[str, torch.Tensor] = {}
    if kind == "plain":
        sd["image_proj.proj.weight"] = _rand((4 * cross, image_embed_dim), gen)
        sd["image_proj.proj.bias"] = _rand((4 * cross,), gen, "bias")
        sd["image_proj.norm.weight"] = _rand((cross,), gen, "norm_weight")
        sd["image_proj.norm.bias"] = _rand((cross,), gen, "bias")
    elif kind == "plus":
        w, inner = resampler_width, 64  # diffusers reads heads as to_q rows / 64
        sd["image_proj.latents"] = torch.randn((1, tokens, w), generator=gen) / math.sqrt(w)
        sd["image_proj.proj_in.weight"] = _rand((w, image_embed_dim), gen)
        sd["image_proj.proj_in.bias"] = _rand((w,), gen, "bias")
        sd["image_proj.proj_out.weight"] = _rand((cross, w), gen)
        sd["image_proj.proj_out.bias"] = _rand((cross,), gen, "bias")
        sd["image_proj.norm_out.weight"] = _rand((cross,), gen, "norm_weight")
        sd["image_proj.norm_out.bias"] = _rand((cross,), gen, "bias")
        for i in range(4):
            p = f"image_proj.layers.{i}."
            for norm in ("0.norm1", "0.norm2", "1.0"):
                sd[p + norm + ".weight"] = _rand((w,), gen, "norm_weight")
                sd[p + norm + ".bias"] = _rand((w,), gen, "bias")
            sd[p + "0.to_q.weight"] = _rand((inner, w), gen)
            sd[p + "0.to_kv.weight"] = _rand((2 * inner, w), gen)
            sd[p + "0.to_out.weight"] = _rand((w, inner), gen)
            sd[p + "1.1.weight"] = _rand((4 * w, w), gen)
            sd[p + "1.3.weight"] = _rand((w, 4 * w), gen)
    else:
        raise ValueError(kind)
    for n, width, cross_dim in layers:
        sd[f"ip_adapter.{n}.to_k_ip.weight"] = _rand((width, cross_dim), gen)
        sd[f"ip_adapter.{n}.to_v_ip.weight"] = _rand((width, cross_dim), gen)
    return sd


def save_ip_adapter(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """`.safetensors`: the flat keys; `.bin`: h94's nested dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for k, v in state.items():
            group, rest = k.split(".", 1)
            nested[group][rest] = v
        torch.save(nested, path)
    return path


def tiny_clip_vision_config(hidden: int = 32, projection: int = 32, layers: int = 2) -> dict[str, Any]:
    """A tiny ViT/14 at 224 px. 16 heads: what the loader assumes for a file whose shapes match no
    shipped config (heads cannot be read from the weights)."""
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": 16, "patch_size": 14, "image_size": CLIP_IMAGE, "projection_dim": projection,
            "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def make_clip_vision_file(path: Path, *, seed: int = 3, **config) -> dict[str, Any]:
    """A CLIPVisionModelWithProjection with seeded random weights saved in the transformers layout
    (`.safetensors`, or a plain state-dict pickle for `.pth`/`.bin` as clip_h.pth is). Returns its config."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = tiny_clip_vision_config(**config)
    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return cfg
