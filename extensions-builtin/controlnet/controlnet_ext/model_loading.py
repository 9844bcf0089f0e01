"""Load a control model file for the checkpoint in use: ControlNets, T2I-Adapters, IP-Adapters.

What a file is, from its keys:
* original (lllyasviel) single file: `input_hint_block.*` with or without `control_model.` (v1.1
  `.pth`, the fp16 pruned `.safetensors`, SD 2.x ones); renamed by `original_controlnet`;
* diffusers-layout single file: `controlnet_cond_embedding.*` (e.g. `diffusers_xl_canny_full.safetensors`);
* diffusers folder: `config.json` (`_class_name` ControlNetModel or T2IAdapter) + weights;
* original T2I-Adapter single file (TencentARC `t2iadapter_*_sd14v1.pth`): `conv_in.*` + `body.*`;
* IP-Adapter: `image_proj.*` / `ip_adapter.*` (built by `controlnet_ext.ip_adapter`).

The config of a single file: the shipped config of the real release (`configs/controlnet/`) when the
file's shapes are that release's; otherwise (custom or tiny models) the loaded checkpoint's UNet
config, as `ControlNetModel.from_unet` builds it, with every shape-defining value (widths, levels,
depths, hint encoder, cross-attention width, size conditioning) read from the file. Either way the
model is built with empty weights and every tensor's shape is checked before it is used.

Files are read safely (`modules.models.checkpoint_io`: safetensors, or pickles checked and loaded with
`torch.load(weights_only=True)`). Errors name the file: ControlModelError (unusable) and
ControlModelMismatchError (for another model family than the checkpoint's).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from modules.models import weights_fit
from modules.paths import CONFIGS_DIR

from .model_files import ControlModelFile, folder_weights

if TYPE_CHECKING:
    from modules.models.loaded import LoadedModel

CONTROLNET_CONFIGS = CONFIGS_DIR / "controlnet"
SHIPPED_CONFIGS = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl-refiner": "SDXL refiner"}
# (cross-attention width, has the SDXL size conditioning) of each family's UNet
_FAMILY_DIMS = {(768, False): "sd1", (1024, False): "sd2", (2048, True): "sdxl", (1280, True): "sdxl-refiner"}
# ControlNetModel config values that the weights' shapes decide (the rest only the config knows)
STRUCTURAL = ("in_channels", "conditioning_channels", "conditioning_embedding_out_channels", "block_out_channels",
              "layers_per_block", "down_block_types", "transformer_layers_per_block", "mid_block_type",
              "cross_attention_dim", "use_linear_projection", "addition_embed_type",
              "projection_class_embeddings_input_dim")
# UNet config values a ControlNet shares (what ControlNetModel.from_unet copies)
_FROM_UNET = ("flip_sin_to_cos", "freq_shift", "only_cross_attention", "downsample_padding", "mid_block_scale_factor",
              "act_fn", "norm_num_groups", "norm_eps", "attention_head_dim", "num_attention_heads", "upcast_attention",
              "resnet_time_scale_shift", "addition_time_embed_dim", "class_embed_type", "num_class_embeds",
              "encoder_hid_dim", "encoder_hid_dim_type")


class ControlKind(str, Enum):
    CONTROLNET = "controlnet"
    T2I_ADAPTER = "t2i_adapter"
    IP_ADAPTER = "ip_adapter"


@dataclass
class ControlModel:
    file: ControlModelFile
    kind: ControlKind
    family: str  # "sd1" | "sd2" | "sdxl" | "custom"
    family_label: str  # "SD 1.x", "SD 2.x", "SDXL", "custom (cross-attention 64)"
    module: Any  # diffusers ControlNetModel | T2IAdapter | ip_adapter.IPAdapterWeights

    @property
    def title(self) -> str:
        return self.file.title


class ControlModelError(ValueError):
    """A control model file that cannot be used; the message names the file and why."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"ControlNet model {name}: {reason}")


class ControlModelMismatchError(ControlModelError):
    """A control model of another family than the loaded checkpoint; names both."""

    def __init__(self, name: str, control_label: str, checkpoint: str, checkpoint_label: str, detail: str = ""):
        self.control_label = control_label
        self.checkpoint = checkpoint
        self.checkpoint_label = checkpoint_label
        reason = (f"it is for {control_label} models, but the checkpoint {checkpoint} is {checkpoint_label}"
                  + (f" ({detail})" if detail else "") + "; choose a control model made for this checkpoint's family")
        super().__init__(name, reason)


# ---------------------------------------------------------------------------------------------
# families


def family_for_dims(cross_attention_dim: Optional[int], size_conditioning: bool) -> tuple[str, str]:
    """(family, label) of a model from its cross-attention width and SDXL size conditioning."""
    fam = _FAMILY_DIMS.get((cross_attention_dim, size_conditioning))
    if fam is not None:
        return fam, FAMILY_LABELS[fam]
    return "custom", f"custom (cross-attention {cross_attention_dim})"


def checkpoint_family(model: "LoadedModel") -> tuple[str, str]:
    """The checkpoint's family by its UNet; a UNet of non-standard width says its layout too."""
    cfg = model.unet.config
    fam, label = family_for_dims(cfg.cross_attention_dim, bool(cfg.addition_embed_type))
    if fam == "custom":
        layout = FAMILY_LABELS.get(getattr(model.family, "value", str(model.family)), str(model.family))
        label = f"custom ({layout} layout, cross-attention {cfg.cross_attention_dim})"
    return fam, label


def _adapter_family(config: Mapping[str, Any]) -> tuple[str, str]:
    if config.get("adapter_type") == "full_adapter_xl":
        return "sdxl", FAMILY_LABELS["sdxl"]
    channels = list(config.get("channels", ()))
    if channels == [320, 640, 1280, 1280]:
        return "sd1", FAMILY_LABELS["sd1"]  # the released SD 1.4/1.5 adapters (TencentARC)
    return "custom", f"custom (channels {channels})"


def _mismatch_detail(cn: Mapping[str, Any], unet: Mapping[str, Any]) -> str:
    """The first difference that keeps a ControlNet's residuals from fitting the UNet ("" if none)."""
    checks = (
        ("cross-attention width", cn.get("cross_attention_dim"), unet.get("cross_attention_dim")),
        ("size conditioning", bool(cn.get("addition_embed_type")), bool(unet.get("addition_embed_type"))),
        ("size conditioning width", cn.get("projection_class_embeddings_input_dim"),
         unet.get("projection_class_embeddings_input_dim")),
        ("down-block channels", list(cn.get("block_out_channels", ())), list(unet.get("block_out_channels", ()))),
        ("layers per block", cn.get("layers_per_block"), unet.get("layers_per_block")),
        ("latent channels", cn.get("in_channels"), unet.get("out_channels")),
    )
    for what, mine, theirs in checks:
        if mine != theirs:
            return f"its {what} is {mine}, the checkpoint's {theirs}"
    return ""


def check_fits(control: ControlModel, model: "LoadedModel") -> None:
    """Raise ControlModelMismatchError unless `control` can steer `model`'s UNet."""
    unet_cfg = dict(model.unet.config)
    fam, label = checkpoint_family(model)
    detail = ""
    if control.kind is ControlKind.CONTROLNET:
        detail = _mismatch_detail(dict(control.module.config), unet_cfg)
    elif control.kind is ControlKind.T2I_ADAPTER:
        channels = list(control.module.config.get("channels", ()))
        block_out = list(unet_cfg["block_out_channels"])
        if control.module.config.get("adapter_type") == "full_adapter_xl":
            if not unet_cfg.get("addition_embed_type") or channels[: len(block_out)] != block_out:
                detail = f"its channels are {channels}, the checkpoint's {block_out}"
        elif channels != block_out:
            detail = f"its channels are {channels}, the checkpoint's {block_out}"
    else:  # IP-Adapter: its attention layers must take the UNet's text width
        dim = getattr(control.module, "cross_attention_dim", None)
        if dim is not None and dim != unet_cfg.get("cross_attention_dim"):
            detail = f"its cross-attention width is {dim}, the checkpoint's {unet_cfg.get('cross_attention_dim')}"
    families_differ = control.family != "custom" and fam != "custom" and control.family != fam
    if detail or families_differ:
        raise ControlModelMismatchError(control.title, control.family_label, model.title, label, detail)


# ---------------------------------------------------------------------------------------------
# reading files


def _read_tensors(path: Path, label: str) -> dict:
    """Tensors of a weights file, read safely; IP-Adapter `.bin` files nest two dicts, flattened."""
    import torch

    from modules.models.checkpoint_io import _torch_load_weights_only, read_state_dict
    from modules.models.errors import CheckpointError
    from modules.models.file_check import PICKLE_SUFFIXES, check_pickle_file

    try:
        if path.suffix.lower() not in PICKLE_SUFFIXES:
            return dict(read_state_dict(path).tensors)
        check_pickle_file(path)  # refuse code before torch ever sees the pickle
        obj = _torch_load_weights_only(path)
    except CheckpointError as exc:
        raise ControlModelError(label, exc.reason) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ControlModelError(label, f"{path.name} holds a {type(obj).__name__}, not a dictionary of tensors")
    out: dict = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            out[str(key)] = value
        elif isinstance(value, dict):  # {"image_proj": {...}, "ip_adapter": {...}}
            out.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
    if not out:
        raise ControlModelError(label, f"{path.name} holds no tensors")
    return out


def _is_ip_adapter(keys) -> bool:
    return any(k.startswith(("image_proj.", "ip_adapter.")) for k in keys)


def _not_a_control_model(keys) -> str:
    keys = list(keys)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "it is a Stable Diffusion checkpoint, not a ControlNet (put it in models/Stable-diffusion)"
    if any("lora_" in k or ".lora" in k for k in keys):
        return "it is a LoRA (or Control-LoRA), which is not supported as a ControlNet model"
    return ("it is not a ControlNet, T2I-Adapter or IP-Adapter (no input_hint_block / controlnet_cond_embedding / "
            "adapter / image_proj weights)")


# ---------------------------------------------------------------------------------------------
# ControlNet configs


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(ids) + 1 if ids else 0


def controlnet_structure(shapes: Mapping[str, tuple], label: str) -> dict:
    """The shape-defining ControlNetModel config values of diffusers-layout tensors."""
    keys = list(shapes)

    def shape(key: str) -> tuple:
        if key not in shapes:
            raise ControlModelError(label, f"the ControlNet weight {key} is missing")
        return tuple(shapes[key])

    levels = _count(keys, r"down_blocks\.(\d+)\.")
    layers = _count(keys, r"down_blocks\.0\.resnets\.(\d+)\.")
    if levels == 0 or layers == 0:
        raise ControlModelError(label, "no ControlNet encoder blocks (down_blocks.*) found")
    block_out = [int(shape(f"down_blocks.{i}.resnets.0.conv2.weight")[0]) for i in range(levels)]
    depths = [_count(keys, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") for i in range(levels)]
    mid_depth = _count(keys, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    attn_depths = {d for d in depths if d}
    if attn_depths <= {mid_depth} and mid_depth:
        tlpb: Any = mid_depth
    else:  # levels without attention take 1; the mid block takes the last level's depth
        tlpb = [d or 1 for d in depths]
        if mid_depth and tlpb[-1] != mid_depth:
            raise ControlModelError(label, f"transformer depths {depths} with a mid depth of {mid_depth} are not supported")
    ctx = next((k for k in sorted(keys) if k.endswith(".attn2.to_k.weight")), None)
    proj = next((k for k in sorted(keys) if k.endswith(".proj_in.weight")), None)
    hint_out = [int(shape("controlnet_cond_embedding.conv_in.weight")[0])]
    n_blocks = _count(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    hint_out += [int(shape(f"controlnet_cond_embedding.blocks.{i}.weight")[0]) for i in range(1, n_blocks, 2)]
    time_dim = int(shape("time_embedding.linear_1.weight")[0])
    if time_dim != 4 * block_out[0]:
        raise ControlModelError(label, f"a time embedding of width {time_dim} (not 4 x {block_out[0]}) is not supported")
    add = shapes.get("add_embedding.linear_1.weight")
    return {
        "in_channels": int(shape("conv_in.weight")[1]),
        "conditioning_channels": int(shape("controlnet_cond_embedding.conv_in.weight")[1]),
        "conditioning_embedding_out_channels": hint_out,
        "block_out_channels": block_out,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "transformer_layers_per_block": tlpb,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else "UNetMidBlock2D",
        "cross_attention_dim": int(shapes[ctx][-1]) if ctx else None,
        "use_linear_projection": proj is not None and len(shapes[proj]) == 2,
        "addition_embed_type": "text_time" if add is not None else None,
        "projection_class_embeddings_input_dim": int(add[1]) if add is not None else None,
    }


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def shipped_config(family: str) -> Optional[dict]:
    name = SHIPPED_CONFIGS.get(family)
    if name is None:
        return None
    cfg = json.loads((CONTROLNET_CONFIGS / name / "config.json").read_text(encoding="utf-8"))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _heads_for_width(width: int) -> int:
    for head_dim in (64, 32, 16, 8):
        if width >= head_dim and width % head_dim == 0:
            return width // head_dim
    return 1


def controlnet_config(structure: Mapping[str, Any], unet_config: Mapping[str, Any]) -> dict:
    """The full ControlNetModel config for a file of `structure`, used with a UNet of `unet_config`."""
    fam, _ = family_for_dims(structure["cross_attention_dim"], bool(structure["addition_embed_type"]))
    shipped = shipped_config(fam)
    if shipped is not None and all(_norm(shipped.get(k)) == _norm(structure[k]) for k in STRUCTURAL):
        cfg = dict(shipped)
    else:  # a custom ControlNet: the rest as ControlNetModel.from_unet takes it from the UNet
        cfg = {k: _norm(unet_config[k]) for k in _FROM_UNET if k in unet_config}
        if list(structure["block_out_channels"]) != list(unet_config.get("block_out_channels", ())):
            cfg["attention_head_dim"] = [_heads_for_width(c) for c in structure["block_out_channels"]]
            cfg["num_attention_heads"] = None
    cfg.update({k: _norm(v) for k, v in structure.items()})
    if "upcast_attention" in unet_config:  # precision only: follow the checkpoint (SD 2.x 768-v needs it)
        cfg["upcast_attention"] = unet_config["upcast_attention"]
    return cfg


# ---------------------------------------------------------------------------------------------
# building


def _build(cls_name: str, config: Mapping[str, Any], state: Mapping[str, Any], label: str):
    """A diffusers model with empty weights that takes the file's tensors; every shape checked."""
    import diffusers
    from accelerate import init_empty_weights

    try:
        with init_empty_weights():
            model = getattr(diffusers, cls_name).from_config(dict(config))
    except Exception as exc:  # diffusers raises ValueError/TypeError/AttributeError for odd configs
        raise ControlModelError(label, f"its config cannot build a {cls_name} ({exc})") from None
    problem = weights_fit.misfit(model, state, cls_name, extra_allowed=False)
    if problem:
        raise ControlModelError(label, problem)
    return weights_fit.assign(model, state).requires_grad_(False)


def _global_pooling(file: ControlModelFile) -> bool:
    """The v1.1 shuffle model pools its residuals (its yaml says `global_average_pooling: True`)."""
    yaml = file.path.with_suffix(".yaml") if not file.is_folder else None
    if yaml is not None and yaml.is_file():
        text = yaml.read_text(encoding="utf-8", errors="replace")
        return bool(re.search(r"global_average_pooling:\s*true", text, re.IGNORECASE))
    return "shuffle" in file.name.lower()


def _cast(state: dict, dtype: Any) -> dict:
    """Floating tensors in `dtype` before the model takes them (casting a built model warns)."""
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _folder_config(file: ControlModelFile) -> dict:
    try:
        cfg = json.loads((file.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ControlModelError(file.title, f"its config.json cannot be read ({exc})") from None
    if not isinstance(cfg, dict):
        raise ControlModelError(file.title, "its config.json is not an object")
    return cfg


def load_control_model(file: ControlModelFile, unet_config: Mapping[str, Any], dtype: Any = None) -> ControlModel:
    """Read and build a control model on the CPU, in `dtype` (default: the file's); no family check."""
    label = file.title
    if file.is_folder:
        cfg = _folder_config(file)
        weights = folder_weights(file.path)
        if weights is None:
            raise ControlModelError(label, "the folder has no diffusion_pytorch_model weights file")
        cls_name = cfg.get("_class_name")
        if cls_name not in ("ControlNetModel", "T2IAdapter"):
            raise ControlModelError(label, f"a {cls_name or 'model without _class_name'} folder is not supported "
                                           "(ControlNetModel and T2IAdapter are)")
        state = _cast(_read_tensors(weights, label), dtype)
        config = {k: v for k, v in cfg.items() if not k.startswith("_")}
        module = _build(cls_name, config, state, label)
        if cls_name == "T2IAdapter":
            fam, fam_label = _adapter_family(config)
            return ControlModel(file, ControlKind.T2I_ADAPTER, fam, fam_label, module)
        fam, fam_label = family_for_dims(module.config.cross_attention_dim, bool(module.config.addition_embed_type))
        return ControlModel(file, ControlKind.CONTROLNET, fam, fam_label, module)

    from .original_controlnet import (controlnet_from_original, is_diffusers_layout, is_original_layout,
                                      is_original_t2i_adapter, t2i_adapter_from_original)

    state = _read_tensors(file.path, label)
    if _is_ip_adapter(state):
        from .ip_adapter import IPAdapterWeights  # [I]'s module; only needed for IP-Adapter files

        try:
            weights = IPAdapterWeights.from_state_dict(state, label)
        except ControlModelError:
            raise
        except (ValueError, KeyError) as exc:  # ip_adapter's own errors already name the file
            raise ControlModelError(label, f"not a usable IP-Adapter file: {exc}") from None
        return ControlModel(file, ControlKind.IP_ADAPTER, weights.family, weights.family_label, weights)
    if is_original_t2i_adapter(state):
        try:
            config, state = t2i_adapter_from_original(state)
        except ValueError as exc:
            raise ControlModelError(label, str(exc)) from None
        module = _build("T2IAdapter", config, _cast(state, dtype), label)
        fam, fam_label = _adapter_family(config)
        return ControlModel(file, ControlKind.T2I_ADAPTER, fam, fam_label, module)
    if is_original_layout(state):
        state = controlnet_from_original(state)
    elif not is_diffusers_layout(state):
        if any(k.startswith(("adapter.", "body.")) for k in state):
            raise ControlModelError(label, "this T2I-Adapter layout is not supported as a single file; use the "
                                           "diffusers folder (config.json + diffusion_pytorch_model.safetensors)")
        raise ControlModelError(label, _not_a_control_model(state))
    state = _cast(state, dtype)
    structure = controlnet_structure({k: tuple(v.shape) for k, v in state.items()}, label)
    config = controlnet_config(structure, unet_config)
    config["global_pool_conditions"] = _global_pooling(file)
    module = _build("ControlNetModel", config, state, label)
    fam, fam_label = family_for_dims(structure["cross_attention_dim"], bool(structure["addition_embed_type"]))
    return ControlModel(file, ControlKind.CONTROLNET, fam, fam_label, module)


# ---------------------------------------------------------------------------------------------
# the cache


class ControlModelCache:
    """Control models loaded for the checkpoint in use, the most recent `capacity` kept."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = max(1, capacity)
        self._models: "OrderedDict[tuple, ControlModel]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(file: ControlModelFile, model: "LoadedModel") -> tuple:
        weights = file.weights_path
        try:
            st = weights.stat()
        except OSError:
            raise ControlModelError(file.title, f"{weights} does not exist any more") from None
        # a custom ControlNet takes its attention heads from the UNet (the weights cannot tell them)
        heads = tuple(str(model.unet.config.get(k)) for k in ("attention_head_dim", "num_attention_heads", "upcast_attention"))
        return (str(file.path.resolve()), st.st_size, st.st_mtime_ns, str(model.device), str(model.dtype), heads)

    def get(self, file: ControlModelFile, model: "LoadedModel") -> ControlModel:
        key = self._key(file, model)
        with self._lock:
            control = self._models.get(key)
            if control is not None:
                self._models.move_to_end(key)
        if control is not None:
            check_fits(control, model)  # the same file may be asked for by another checkpoint
            return control
        with self._lock:  # one load at a time; a second job for the same file then finds it cached
            control = self._models.get(key)
            if control is None:
                control = load_control_model(file, dict(model.unet.config), model.dtype)
                check_fits(control, model)  # before it is moved to the device or takes a cache slot
                if control.kind is not ControlKind.IP_ADAPTER:  # IP-Adapter runs place their own weights
                    control.module.to(model.device)
                self._models[key] = control
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
        check_fits(control, model)
        return control

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


__all__ = ["ControlKind", "ControlModel", "ControlModelError", "ControlModelMismatchError", "ControlModelCache",
           "check_fits", "load_control_model", "family_for_dims", "checkpoint_family", "controlnet_structure",
           "controlnet_config", "FAMILY_LABELS"]
