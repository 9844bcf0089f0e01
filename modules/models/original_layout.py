"""Rename diffusers/transformers state dicts to the original LDM/SGM single-file layout.

The inverse of diffusers' single-file conversion, written from the layouts themselves:

* UNet (`model.diffusion_model.`): `input_blocks.0.0` is conv_in; down level i, layer j is
  `input_blocks.{1 + i*(L+1) + j}` (`.0` resnet, `.1` spatial transformer) and its downsampler
  `input_blocks.{(i+1)*(L+1)}.0.op`; `middle_block.0/1/2` = resnet, transformer, resnet; up level i,
  layer j (L+1 layers) is `output_blocks.{i*(L+1) + j}` with the upsampler after the transformer
  (`.2.conv`) or after the resnet (`.1.conv`); `time_embed.0/2`, `label_emb.0.0/0.2` (SDXL),
  `out.0/2`. Resnets: in_layers.0/2, emb_layers.1, out_layers.0/3, skip_connection.
* VAE (`first_stage_model.` or bare in VAE files): `encoder.down.{i}.block.{j}`, decoder levels
  reversed (`decoder.up.{n-1-i}`), `mid.block_1/2`, `mid.attn_1.{norm,q,k,v,proj_out}` as 1x1
  convolutions, `norm_out`, `nin_shortcut`.
* OpenAI CLIP (SD1 `cond_stage_model.transformer.`, SDXL `conditioner.embedders.0.transformer.`):
  the transformers layout under `text_model.`.
* OpenCLIP (SD2 `cond_stage_model.model.`, SDXL `conditioner.embedders.1.model.`, refiner
  `conditioner.embedders.0.model.`): `transformer.resblocks.N.attn.in_proj_{weight,bias}` (q, k, v
  stacked), `attn.out_proj`, `ln_1`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`, `token_embedding.weight`,
  `positional_embedding`, `ln_final`, `text_projection` (width x proj, i.e. transposed).

Used by the test checkpoint factory; also what a checkpoint merger needs to save a single file.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
XL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
XL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
REFINER_OPENCLIP_PREFIX = "conditioner.embedders.0.model."

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_head(rest: str, table: Mapping[str, str]) -> str:
    head, dot, tail = rest.partition(".")
    if rest.startswith("to_out.0."):
        return table.get("to_out.0", "to_out.0") + "." + rest[len("to_out.0."):]
    return table.get(head, head) + dot + tail


def unet_prefix_map(config: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, original prefix, is_resnet) for a UNet2DConditionModel config."""
    n = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("per-level layers_per_block is not an SD layout")
    per = layers + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    rules: list[tuple[str, str, bool]] = [
        ("time_embedding.linear_1.", "time_embed.0.", False),
        ("time_embedding.linear_2.", "time_embed.2.", False),
        ("add_embedding.linear_1.", "label_emb.0.0.", False),
        ("add_embedding.linear_2.", "label_emb.0.2.", False),
        ("conv_in.", "input_blocks.0.0.", False),
        ("conv_norm_out.", "out.0.", False),
        ("conv_out.", "out.2.", False),
        ("mid_block.resnets.0.", "middle_block.0.", True),
        ("mid_block.attentions.0.", "middle_block.1.", False),
        ("mid_block.resnets.1.", "middle_block.2.", True),
    ]
    for i in range(n):
        for j in range(layers):
            k = 1 + i * per + j
            rules.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0.", True))
            rules.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{k}.1.", False))
        if i < n - 1:
            rules.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * per}.0.op.", False))
    for i in range(n):
        for j in range(per):
            k = i * per + j
            rules.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0.", True))
            rules.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{k}.1.", False))
        if i < n - 1:
            slot = 2 if up_has_attn[i] else 1
            rules.append((f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{i * per + layers}.{slot}.conv.", False))
    return rules


def unet_key_to_original(key: str, rules) -> str:
    for dif, orig, is_resnet in rules:
        if key.startswith(dif):
            rest = key[len(dif):]
            return orig + (_rename_head(rest, _UNET_RESNET) if is_resnet else rest)
    raise KeyError(f"no original-layout name for UNet key {key!r}")


def unet_to_original(state_dict: Mapping[str, Any], config: Mapping[str, Any], prefix: str = UNET_PREFIX) -> dict:
    rules = unet_prefix_map(config)
    return {prefix + unet_key_to_original(k, rules): v for k, v in state_dict.items()}


def vae_key_to_original(key: str, n_levels: int) -> str:
    m = re.match(r"^(encoder|decoder)\.(.*)$", key)
    if not m:
        return key  # quant_conv, post_quant_conv
    part, rest = m.groups()
    if rest.startswith("conv_norm_out."):
        return f"{part}.norm_out." + rest[len("conv_norm_out."):]
    if rest.startswith(("conv_in.", "conv_out.")):
        return key
    m = re.match(r"^(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)$", rest)
    if m:
        kind, i, sub, j, tail = m.groups()
        level = int(i) if kind == "down" else n_levels - 1 - int(i)
        if sub == "resnets":
            tail = tail.replace("conv_shortcut.", "nin_shortcut.")
            return f"{part}.{kind}.{level}.block.{j}.{tail}"
        return f"{part}.{kind}.{level}.{'downsample' if kind == 'down' else 'upsample'}.{tail}"
    m = re.match(r"^mid_block\.resnets\.(\d+)\.(.*)$", rest)
    if m:
        return f"{part}.mid.block_{int(m.group(1)) + 1}.{m.group(2).replace('conv_shortcut.', 'nin_shortcut.')}"
    m = re.match(r"^mid_block\.attentions\.0\.(.*)$", rest)
    if m:
        return f"{part}.mid.attn_1." + _rename_head(m.group(1), _VAE_ATTN)
    raise KeyError(f"no original-layout name for VAE key {key!r}")


def vae_to_original(state_dict: Mapping[str, Any], config: Mapping[str, Any], prefix: str = VAE_PREFIX) -> dict:
    """Diffusers AutoencoderKL weights in the LDM layout; attention projections become 1x1 convs."""
    n = len(config["block_out_channels"])
    out = {}
    for k, v in state_dict.items():
        new = vae_key_to_original(k, n)
        if ".mid.attn_1." in new and new.endswith(".weight") and getattr(v, "ndim", 0) == 2:
            v = v.reshape(*v.shape, 1, 1)
        out[prefix + new] = v
    return out


def clip_to_original(state_dict: Mapping[str, Any], prefix: str) -> dict:
    """transformers CLIPTextModel weights under an LDM prefix (`...transformer.text_model.*`)."""
    out = {}
    for k, v in state_dict.items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out[prefix + k] = v
    return out


_OPENCLIP_LAYER = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


def openclip_to_original(state_dict: Mapping[str, Any], prefix: str) -> dict:
    """transformers CLIPTextModel(WithProjection) weights in OpenCLIP's layout under `prefix`."""
    import torch

    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in state_dict.items()}
    out: dict = {}
    qkv: dict[tuple[int, str], dict[str, Any]] = {}
    for k, v in sd.items():
        if k == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = v
        elif k == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = v
        elif k.startswith("final_layer_norm."):
            out[prefix + "ln_final." + k[len("final_layer_norm."):]] = v
        elif k == "text_projection.weight":
            out[prefix + "text_projection"] = v.t().contiguous()
        elif k.startswith("encoder.layers."):
            m = re.match(r"^encoder\.layers\.(\d+)\.(.*)$", k)
            n, rest = int(m.group(1)), m.group(2)
            m2 = re.match(r"^self_attn\.(q|k|v)_proj\.(weight|bias)$", rest)
            if m2:
                qkv.setdefault((n, m2.group(2)), {})[m2.group(1)] = v
                continue
            for a, b in _OPENCLIP_LAYER.items():
                if rest.startswith(a):
                    out[f"{prefix}transformer.resblocks.{n}.{b}{rest[len(a):]}"] = v
                    break
            else:
                raise KeyError(f"no OpenCLIP name for text encoder key {k!r}")
        elif k.endswith("position_ids"):
            continue
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {k!r}")
    for (n, kind), parts in qkv.items():
        out[f"{prefix}transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out
