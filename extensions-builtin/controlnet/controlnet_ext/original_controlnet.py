"""ControlNet weights in the original (lllyasviel `cldm`) single-file layout <-> diffusers' ControlNetModel.

The original layout is the UNet encoder of the LDM layout (see `modules.models.original_layout`)
plus the ControlNet parts, optionally under `control_model.`:

* `input_hint_block.{0, 2, ..., 2n}`: the hint encoder; `.0` is diffusers'
  `controlnet_cond_embedding.conv_in`, `.2k` (k = 1..n-1) its `blocks.{k-1}`, the last one `conv_out`
  (index 14 for the released models: convolutions 16, 16, 32, 32, 96, 96, 256 -> model width);
* `zero_convs.{i}.0`: diffusers' `controlnet_down_blocks.{i}` (one per encoder residual);
* `middle_block_out.0`: diffusers' `controlnet_mid_block`.

Going to diffusers uses diffusers' own `convert_controlnet_checkpoint` (an independent converter,
so a round trip through our `controlnet_to_original` checks both) for the UNet encoder; the hint
encoder is renamed here, since the converter assumes the released depth (conv_out at index 14). v1.0 files that also hold the whole
SD model (`model.diffusion_model.*`, `cond_stage_model.*`) keep only the `control_model.` part.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from modules.models.original_layout import unet_key_to_original, unet_prefix_map

CONTROL_PREFIX = "control_model."
HINT = "input_hint_block."
_DIFFUSERS_HINT = "controlnet_cond_embedding."


def is_original_layout(keys) -> bool:
    return any(k.startswith(HINT) or k.startswith(CONTROL_PREFIX + HINT) for k in keys)


def is_diffusers_layout(keys) -> bool:
    return any(k.startswith(_DIFFUSERS_HINT) for k in keys)


def strip_prefix(state: Mapping[str, Any]) -> dict:
    """The ControlNet's own tensors without `control_model.`; other models' tensors dropped."""
    if any(k.startswith(CONTROL_PREFIX) for k in state):
        return {k[len(CONTROL_PREFIX):]: v for k, v in state.items() if k.startswith(CONTROL_PREFIX)}
    return dict(state)


def _hint_indices(keys) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(r"input_hint_block\.(\d+)\.weight$", k))})


def layers_per_block(keys) -> int:
    """Resnets per encoder level, from where the downsamplers sit (`input_blocks.{(i+1)(L+1)}.0.op`)."""
    ops = sorted({int(m.group(1)) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.weight$", k))})
    if ops:
        return ops[0] - 1
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.", k))}
    return max(blocks) if blocks else 0


def controlnet_from_original(state: Mapping[str, Any]) -> dict:
    """Original-layout tensors (with or without `control_model.`) -> diffusers ControlNetModel names."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    bare = strip_prefix(state)
    hint = _hint_indices(bare)
    # the hint encoder is renamed here: diffusers' converter assumes the released depth (conv_out at 14)
    rest = {k: v for k, v in bare.items() if not k.startswith(HINT)}
    converted = convert_controlnet_checkpoint(rest, {"layers_per_block": layers_per_block(rest)})
    # nor does it carry SDXL's size conditioning (label_emb.0.{0,2} -> add_embedding.linear_{1,2})
    for leaf in ("weight", "bias"):
        for orig, new in (("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2")):
            if f"{orig}.{leaf}" in bare:
                converted[f"{new}.{leaf}"] = bare[f"{orig}.{leaf}"]
    for n, index in enumerate(hint):
        name = "conv_in" if n == 0 else "conv_out" if n == len(hint) - 1 else f"blocks.{n - 1}"
        for leaf in ("weight", "bias"):
            if f"{HINT}{index}.{leaf}" in bare:
                converted[f"{_DIFFUSERS_HINT}{name}.{leaf}"] = bare[f"{HINT}{index}.{leaf}"]
    return {k: v for k, v in converted.items() if v is not None}


def controlnet_to_original(state: Mapping[str, Any], config: Mapping[str, Any], prefix: str = CONTROL_PREFIX) -> dict:
    """diffusers ControlNetModel tensors -> the original layout (what the released files hold)."""
    unet_like = dict(config)
    unet_like["up_block_types"] = [t.replace("Down", "Up") for t in reversed(config["down_block_types"])]
    rules = unet_prefix_map(unet_like)
    n_hint_blocks = len(config.get("conditioning_embedding_out_channels", (16, 32, 96, 256))) * 2 - 2
    out = {}
    for key, value in state.items():
        if key.startswith("controlnet_down_blocks."):
            i, leaf = key[len("controlnet_down_blocks."):].split(".", 1)
            name = f"zero_convs.{i}.0.{leaf}"
        elif key.startswith("controlnet_mid_block."):
            name = "middle_block_out.0." + key[len("controlnet_mid_block."):]
        elif key.startswith(_DIFFUSERS_HINT + "conv_in."):
            name = f"{HINT}0." + key.rsplit(".", 1)[1]
        elif key.startswith(_DIFFUSERS_HINT + "conv_out."):
            name = f"{HINT}{2 * (n_hint_blocks + 1)}." + key.rsplit(".", 1)[1]
        elif key.startswith(_DIFFUSERS_HINT + "blocks."):
            _, _, i, leaf = key.split(".", 3)
            name = f"{HINT}{2 * (int(i) + 1)}.{leaf}"
        else:
            name = unet_key_to_original(key, rules)
        out[prefix + name] = value
    return out


__all__ = ["CONTROL_PREFIX", "is_original_layout", "is_diffusers_layout", "strip_prefix", "layers_per_block",
           "controlnet_from_original", "controlnet_to_original"]


# ---------------------------------------------------------------------------------------------
# T2I-Adapter (TencentARC `t2iadapter_*_sd14v1.pth` / `_sd15v2.pth`, the full adapter)
#
# The original Adapter is a flat `body` of resnet blocks, `nums_rb` per level: `body.{i*nrb + j}`
# with `in_conv` (only where the width changes), `block1` (3x3) and `block2` (1x1); `conv_in` takes
# the 8x8 pixel-unshuffled hint. diffusers' FullAdapter holds the same as `adapter.body.{i}.in_conv`
# and `adapter.body.{i}.resnets.{j}.block{1,2}`.

_ADAPTER_BODY = re.compile(r"^body\.(\d+)\.(in_conv|block1|block2)\.(weight|bias)$")
ADAPTER_UNSHUFFLE = 8


def is_original_t2i_adapter(keys) -> bool:
    keys = set(keys)
    return "conv_in.weight" in keys and "body.0.block1.weight" in keys


def t2i_adapter_from_original(state: Mapping[str, Any]) -> tuple[dict, dict]:
    """(diffusers T2IAdapter config, tensors) of an original full adapter; ValueError if it is another kind."""
    unknown = [k for k in state if k != "conv_in.weight" and k != "conv_in.bias" and not _ADAPTER_BODY.match(k)]
    if unknown:
        raise ValueError(f"not a full T2I-Adapter (unexpected weight {unknown[0]}; light, style and "
                         "CoAdapter files are not supported)")
    blocks = 1 + max(int(_ADAPTER_BODY.match(k).group(1)) for k in state if _ADAPTER_BODY.match(k))
    widths = [int(state[f"body.{k}.block1.weight"].shape[0]) for k in range(blocks)]
    changes = [k for k in range(1, blocks) if f"body.{k}.in_conv.weight" in state]
    nrb = changes[0] if changes else blocks
    if blocks % nrb or any(k % nrb for k in changes):
        raise ValueError(f"unrecognised T2I-Adapter layout ({blocks} blocks, width changes at {changes})")
    cin = int(state["conv_in.weight"].shape[1])
    if cin % (ADAPTER_UNSHUFFLE ** 2):
        raise ValueError(f"conv_in takes {cin} channels, not a multiple of {ADAPTER_UNSHUFFLE ** 2}")
    config = {"in_channels": cin // ADAPTER_UNSHUFFLE ** 2, "channels": widths[::nrb], "num_res_blocks": nrb,
              "downscale_factor": ADAPTER_UNSHUFFLE, "adapter_type": "full_adapter"}
    out = {f"adapter.conv_in.{leaf}": state[f"conv_in.{leaf}"] for leaf in ("weight", "bias") if f"conv_in.{leaf}" in state}
    for key, value in state.items():
        m = _ADAPTER_BODY.match(key)
        if not m:
            continue
        k, part, leaf = int(m.group(1)), m.group(2), m.group(3)
        level, j = divmod(k, nrb)
        name = f"adapter.body.{level}.in_conv" if part == "in_conv" else f"adapter.body.{level}.resnets.{j}.{part}"
        out[f"{name}.{leaf}"] = value
    return config, out
