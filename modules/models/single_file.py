"""Build a diffusers pipeline from a single-file checkpoint, a VAE file or a diffusers folder, offline.

Single files (original LDM/SGM layout) go through diffusers' own single-file conversion utilities
(`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`,
`convert_open_clip_checkpoint`) into models built from the family's config folder in `configs/`
(diffusers format, real SD hyper-parameters). The shapes in the file override the shape-defining
values of that config (channels, levels, layers, widths, depths), so a real checkpoint rebuilds its
exact config and a tiny test checkpoint in the same layout loads just as well. Models are created
with empty weights and take the file's tensors directly (no second copy, no random init).
Tokenizers are built from `configs/clip_tokenizer` (pad `<|endoftext|>` for OpenAI CLIP-L, `!` for
OpenCLIP). Nothing is downloaded: no hub call is ever made.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..paths import CLIP_TOKENIZER_DIR, CONFIGS_DIR
from .checkpoint_io import read_state_dict
from .detect import (
    EPSILON,
    SD1_CLIP,
    SD2_OPENCLIP,
    UNET,
    V_PREDICTION,
    XL_CLIP_L,
    XL_OPENCLIP_BASE,
    XL_OPENCLIP_REFINER,
    Architecture,
    detect_architecture,
)
from .errors import CheckpointError, UnsupportedModelError
from . import weights_fit
from .options import MemoryMode, ModelOptions

CLIP_PAD = "<|endoftext|>"
OPENCLIP_PAD = "!"


@dataclass
class BuiltPipeline:
    """A pipeline fresh from disk plus what was learned about it while loading."""

    pipe: Any
    architecture: Architecture
    native_size: int
    warnings: list[str]


# ---------------------------------------------------------------------------------------------
# configs


def family_config_dir(name: str) -> Path:
    return CONFIGS_DIR / name


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _heads_for_width(width: int) -> int:
    """Attention heads for a width the shipped config does not cover (64-wide heads like SD)."""
    for head_dim in (64, 32, 16, 8):
        if width >= head_dim and width % head_dim == 0:
            return width // head_dim
    return 1


def _count(shapes: Mapping, pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    return max(ids) + 1 if ids else 0


def infer_unet_config(
    shapes: Mapping[str, tuple], base: Mapping[str, Any], *, prefix: str = UNET, pooled_dim: Optional[int] = None, n_time_ids: int = 6
) -> dict:
    """The family's UNet config with every shape-defining value read from the checkpoint."""
    P = re.escape(prefix)
    cfg = {k: v for k, v in base.items() if not k.startswith("_")}

    def shape(key):
        s = shapes.get(prefix + key)
        if s is None:
            raise UnsupportedModelError(None, f"UNet weight {prefix + key} is missing; not a supported UNet layout")
        return tuple(s)

    conv_in = shape("input_blocks.0.0.weight")
    cfg["in_channels"] = int(conv_in[1])
    cfg["out_channels"] = int(shape("out.2.weight")[0])
    n_in = _count(shapes, P + r"input_blocks\.(\d+)\.")
    ops = sorted({int(m.group(1)) for k in shapes if (m := re.match(P + r"input_blocks\.(\d+)\.0\.op\.weight$", k))})
    levels = len(ops) + 1
    per_level, rem = divmod(n_in - 1 - len(ops), levels)
    if rem or per_level < 1 or ops != [(i + 1) * (per_level + 1) for i in range(levels - 1)]:
        raise UnsupportedModelError(None, f"unrecognised UNet layout ({n_in} input blocks, downsamplers at {ops})")
    layers = per_level

    def depth(block_prefix: str) -> int:
        return _count(shapes, P + re.escape(block_prefix) + r"\.transformer_blocks\.(\d+)\.")

    block_out, down_types, depths = [], [], []
    for i in range(levels):
        k = 1 + i * (layers + 1)
        block_out.append(int(shape(f"input_blocks.{k}.0.out_layers.3.weight")[0]))
        d = depth(f"input_blocks.{k}.1")
        down_types.append("CrossAttnDownBlock2D" if d else "DownBlock2D")
        depths.append(d)
    up_types = []
    for i in range(levels):
        up_types.append("CrossAttnUpBlock2D" if depth(f"output_blocks.{i * (layers + 1)}.1") else "UpBlock2D")
    mid_depth = depth("middle_block.1")
    if mid_depth == 0:
        raise UnsupportedModelError(None, "a UNet without a mid-block transformer is not a Stable Diffusion layout")
    attn_depths = {d for d in depths if d}
    if attn_depths <= {mid_depth}:
        cfg["transformer_layers_per_block"] = mid_depth
    else:
        # levels without attention ignore their depth; diffusers takes the mid block's from the last
        filled = [d or 1 for d in depths[:-1]] + [depths[-1] or mid_depth]
        if filled[-1] != mid_depth:
            raise UnsupportedModelError(None, f"transformer depths {depths} with mid depth {mid_depth} are not supported")
        cfg["transformer_layers_per_block"] = filled

    ctx_key = next((k for k in sorted(shapes) if k.startswith(prefix) and k.endswith(".attn2.to_k.weight")), None)
    if ctx_key is None:
        raise UnsupportedModelError(None, "the UNet has no cross-attention layers")
    cfg["cross_attention_dim"] = int(shapes[ctx_key][-1])
    proj_key = next((k for k in sorted(shapes) if k.startswith(prefix) and k.endswith(".proj_in.weight")), None)
    cfg["use_linear_projection"] = proj_key is not None and len(shapes[proj_key]) == 2
    cfg["layers_per_block"] = layers
    cfg["down_block_types"] = down_types
    cfg["up_block_types"] = up_types
    if block_out != list(base.get("block_out_channels", [])):
        head = base.get("attention_head_dim", 8)
        if isinstance(head, int) and all(c % head == 0 for c in block_out):
            cfg["attention_head_dim"] = head  # SD1 style: a fixed number of heads
        else:
            cfg["attention_head_dim"] = [_heads_for_width(c) for c in block_out]
    cfg["block_out_channels"] = block_out
    time_dim = int(shape("time_embed.0.weight")[0])
    cfg["time_embedding_dim"] = None if time_dim == 4 * block_out[0] else time_dim

    if prefix + "label_emb.0.0.weight" in shapes:
        in_dim = int(shapes[prefix + "label_emb.0.0.weight"][1])
        cfg["addition_embed_type"] = "text_time"
        cfg["projection_class_embeddings_input_dim"] = in_dim
        if in_dim != base.get("projection_class_embeddings_input_dim"):
            if pooled_dim is None or (in_dim - pooled_dim) % n_time_ids:
                raise UnsupportedModelError(None, f"cannot split the SDXL size conditioning input of width {in_dim}")
            cfg["addition_time_embed_dim"] = (in_dim - pooled_dim) // n_time_ids
    else:
        cfg["addition_embed_type"] = None
        cfg["projection_class_embeddings_input_dim"] = None
    return cfg


def infer_vae_config(shapes: Mapping[str, tuple], base: Mapping[str, Any], prefix: str = "") -> dict:
    P = re.escape(prefix)
    cfg = {k: v for k, v in base.items() if not k.startswith("_")}
    levels = _count(shapes, P + r"encoder\.down\.(\d+)\.")
    if levels == 0 or prefix + "decoder.conv_in.weight" not in shapes:
        raise UnsupportedModelError(None, "no VAE weights (encoder.down.*, decoder.*) found")
    cfg["block_out_channels"] = [int(shapes[f"{prefix}encoder.down.{i}.block.0.conv2.weight"][0]) for i in range(levels)]
    cfg["layers_per_block"] = _count(shapes, P + r"encoder\.down\.0\.block\.(\d+)\.")
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * levels
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * levels
    cfg["in_channels"] = int(shapes[prefix + "encoder.conv_in.weight"][1])
    cfg["out_channels"] = int(shapes[prefix + "decoder.conv_out.weight"][0])
    cfg["latent_channels"] = int(shapes[prefix + "decoder.conv_in.weight"][1])
    cfg["use_quant_conv"] = prefix + "quant_conv.weight" in shapes
    cfg["use_post_quant_conv"] = prefix + "post_quant_conv.weight" in shapes
    return cfg


def _text_config(base: Mapping[str, Any], *, hidden: int, vocab: int, positions: int, layers: int, intermediate: int, projection: Optional[int]):
    from transformers import CLIPTextConfig

    d = {k: v for k, v in base.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
    if hidden != base.get("hidden_size"):
        d["num_attention_heads"] = _heads_for_width(hidden)
    d.update(hidden_size=hidden, vocab_size=vocab, max_position_embeddings=positions, num_hidden_layers=layers, intermediate_size=intermediate)
    if projection is not None:
        d["projection_dim"] = projection
    return CLIPTextConfig(**d)


def infer_clip_config(shapes: Mapping[str, tuple], base: Mapping[str, Any], prefix: str):
    """OpenAI CLIP-L text encoder (`<prefix>text_model.*`)."""
    p = prefix + "text_model."
    tok = shapes[p + "embeddings.token_embedding.weight"]
    return _text_config(
        base,
        hidden=int(tok[1]),
        vocab=int(tok[0]),
        positions=int(shapes[p + "embeddings.position_embedding.weight"][0]),
        layers=_count(shapes, re.escape(p) + r"encoder\.layers\.(\d+)\."),
        intermediate=int(shapes[p + "encoder.layers.0.mlp.fc1.weight"][0]),
        projection=None,
    )


def infer_openclip_config(shapes: Mapping[str, tuple], base: Mapping[str, Any], prefix: str, *, drop_last_layer: bool):
    """OpenCLIP text encoder (`<prefix>transformer.resblocks.*`). SD 2.x drops the last layer."""
    tok = shapes[prefix + "token_embedding.weight"]
    layers = _count(shapes, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    proj = shapes.get(prefix + "text_projection")
    return _text_config(
        base,
        hidden=int(tok[1]),
        vocab=int(tok[0]),
        positions=int(shapes[prefix + "positional_embedding"][0]),
        layers=layers - 1 if drop_last_layer else layers,
        intermediate=int(shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0]),
        projection=int(proj[1]) if proj is not None and not drop_last_layer else None,
    )


# ---------------------------------------------------------------------------------------------
# building modules


def _assign(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, path: Optional[Path]) -> torch.nn.Module:
    """Load `state` into a model built with empty weights; every parameter must be provided."""
    problem = weights_fit.misfit(model, state, what)
    if problem:
        raise CheckpointError(path, problem)
    return weights_fit.assign(model, state)


def _empty(factory):
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory()


def build_unet(tensors, config: dict, path: Optional[Path]):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    converted = convert_ldm_unet_checkpoint(tensors, config)
    unet = _empty(lambda: UNet2DConditionModel.from_config(config))
    return _assign(unet, converted, "UNet", path)


def build_vae(tensors, config: dict, path: Optional[Path]):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    converted = convert_ldm_vae_checkpoint(tensors, config)
    vae = _empty(lambda: AutoencoderKL.from_config(config))
    return _assign(vae, converted, "VAE", path)


def build_clip(tensors, config, path: Optional[Path]):
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextModel

    model = _empty(lambda: CLIPTextModel(config))
    state = convert_ldm_clip_checkpoint(tensors)
    state = _fit_text_state(model, state)
    return _assign(model, state, "CLIP text encoder", path)


def build_openclip(tensors, config, prefix: str, path: Optional[Path], *, with_projection: bool):
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    model = _empty(lambda: cls(config))
    state = convert_open_clip_checkpoint(model, {k: v for k, v in tensors.items() if k.startswith(prefix)}, prefix=prefix)
    n = config.num_hidden_layers
    state = {
        k: v
        for k, v in state.items()
        if not ((m := re.search(r"encoder\.layers\.(\d+)\.", k)) and int(m.group(1)) >= n)  # SD 2.x: penultimate layer
    }
    if not with_projection:
        state.pop("text_projection.weight", None)
    state = _fit_text_state(model, state)
    return _assign(model, state, "OpenCLIP text encoder", path)


def _fit_text_state(model, state: dict) -> dict:
    """Match `text_model.` prefixes to the model (transformers 5 flattened CLIPTextModel)."""
    wants_prefix = hasattr(model, "text_model")
    out = {}
    for k, v in state.items():
        if k.endswith("position_ids"):
            continue
        bare = k[len("text_model."):] if k.startswith("text_model.") else k
        if wants_prefix and bare != "text_projection.weight":
            out["text_model." + bare] = v
        else:
            out[bare] = v
    return out


def build_tokenizer(pad_token: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token=pad_token, local_files_only=True)


def build_scheduler(config_dir: Path, prediction_type: Optional[str], extra: Optional[dict] = None):
    import diffusers

    cfg = _read_json(config_dir / "scheduler" / "scheduler_config.json")
    cls = getattr(diffusers, cfg["_class_name"])
    overrides = dict(extra or {})
    if prediction_type:
        overrides["prediction_type"] = prediction_type
    return cls.from_config(cfg, **overrides)


# ---------------------------------------------------------------------------------------------
# pipelines


_PIPELINES = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sd2-v": "StableDiffusionPipeline",
    "sd1-inpaint": "StableDiffusionInpaintPipeline",
    "sd2-inpaint": "StableDiffusionInpaintPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl-inpaint": "StableDiffusionXLInpaintPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
}
_ALLOWED_FOLDER_PIPELINES = set(_PIPELINES.values()) | {"StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline"}


def assemble_pipeline(variant: str, *, vae, unet, scheduler, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None):
    import diffusers

    cls = getattr(diffusers, _PIPELINES[variant])
    if variant.startswith("sdxl"):
        kwargs = dict(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False,
        )
        if variant == "sdxl-refiner":
            kwargs.update(requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
        return cls(**kwargs)
    return cls(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _normalize_keys(tensors: dict) -> dict:
    """Old checkpoints keep CLIP without the `text_model.` level (pre-4.x transformers layout)."""
    out = {}
    for k, v in tensors.items():
        for p in (SD1_CLIP, XL_CLIP_L):
            if k.startswith(p) and not k.startswith(p + "text_model."):
                k = p + "text_model." + k[len(p):]
                break
        out[k] = v
    return out


@torch.no_grad()
def probe_v_prediction(unet) -> bool:
    """A1111's test: at t=999 on a constant 0.5 input, a v-model's output minus the input averages
    far below -1 (it predicts roughly -x), an epsilon model's does not."""
    device, dtype = unet.device, unet.dtype
    if device.type == "meta":
        device = torch.device("cpu")
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, device=device, dtype=dtype)
    cond = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=device, dtype=dtype)
    t = torch.tensor([999], device=device)
    out = unet(x, t, encoder_hidden_states=cond).sample
    return (out.float() - x.float()).mean().item() < -1


def load_checkpoint_file(
    path: Path,
    options: ModelOptions,
    *,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
    vae_dtype: Optional[torch.dtype] = None,
) -> BuiltPipeline:
    """Load an original-layout `.safetensors`/`.ckpt` into a ready diffusers pipeline."""
    from .options import resolve_device, resolve_dtypes

    path = Path(path)
    device = device if device is not None else resolve_device(options)
    if dtype is None or vae_dtype is None:
        d, vd = resolve_dtypes(options, device)
        dtype, vae_dtype = dtype or d, vae_dtype or vd
    loaded = read_state_dict(path)
    tensors = _normalize_keys(loaded.tensors)
    del loaded.tensors
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    arch = detect_architecture(shapes, path, global_step=loaded.global_step)
    cfg_dir = family_config_dir(arch.config_name)
    warnings: list[str] = []

    try:
        # text encoders first: SDXL's pooled width tells how to split the UNet's size conditioning
        te = te2 = tok = tok2 = None
        pooled_dim = None
        if arch.family_id == "sd1":
            te = build_clip(tensors, infer_clip_config(shapes, _read_json(cfg_dir / "text_encoder" / "config.json"), SD1_CLIP), path)
            tok = build_tokenizer(CLIP_PAD)
        elif arch.family_id == "sd2":
            cfg = infer_openclip_config(shapes, _read_json(cfg_dir / "text_encoder" / "config.json"), SD2_OPENCLIP, drop_last_layer=True)
            te = build_openclip(tensors, cfg, SD2_OPENCLIP, path, with_projection=False)
            tok = build_tokenizer(OPENCLIP_PAD)
        else:
            g_prefix = XL_OPENCLIP_REFINER if arch.family_id == "sdxl-refiner" else XL_OPENCLIP_BASE
            cfg2 = infer_openclip_config(shapes, _read_json(cfg_dir / "text_encoder_2" / "config.json"), g_prefix, drop_last_layer=False)
            te2 = build_openclip(tensors, cfg2, g_prefix, path, with_projection=True)
            tok2 = build_tokenizer(OPENCLIP_PAD)
            pooled_dim = cfg2.projection_dim
            if arch.family_id == "sdxl":
                te = build_clip(tensors, infer_clip_config(shapes, _read_json(cfg_dir / "text_encoder" / "config.json"), XL_CLIP_L), path)
                tok = build_tokenizer(CLIP_PAD)
        for k in [k for k in tensors if k.startswith(("cond_stage_model.", "conditioner."))]:
            del tensors[k]

        unet_cfg = infer_unet_config(
            shapes, _read_json(cfg_dir / "unet" / "config.json"), pooled_dim=pooled_dim,
            n_time_ids=5 if arch.family_id == "sdxl-refiner" else 6,
        )
        unet = build_unet(tensors, unet_cfg, path)
        for k in [k for k in tensors if k.startswith(UNET)]:
            del tensors[k]
        vae = build_vae(tensors, infer_vae_config(shapes, _read_json(cfg_dir / "vae" / "config.json"), "first_stage_model."), path)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(path, exc.reason) from None
    except KeyError as exc:
        raise CheckpointError(path, f"the {arch.label} checkpoint lacks weight {exc.args[0]!r}") from None
    finally:
        tensors.clear()

    for m in (te, te2, unet):
        if m is not None:
            cast_module(m, dtype)
    cast_module(vae, vae_dtype)

    if arch.prediction_type is None:  # SD 2.x with nothing in the file to tell: A1111's probe
        unet.to(device)
        is_v = probe_v_prediction(unet)
        arch = arch.with_prediction(V_PREDICTION if is_v else EPSILON, "probe")
        if is_v:
            _enable_upcast_attention(unet)

    sched_extra = {"rescale_betas_zero_snr": True} if "ztsnr" in shapes else None
    scheduler = build_scheduler(family_config_dir(arch.config_name), arch.prediction_type, sched_extra)
    pipe = assemble_pipeline(
        arch.variant, vae=vae, unet=unet, scheduler=scheduler, text_encoder=te, tokenizer=tok,
        text_encoder_2=te2, tokenizer_2=tok2,
    )
    warnings += place_pipeline(pipe, options, device)
    return BuiltPipeline(pipe, arch, arch.native_size, warnings)


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating-point weights to `dtype` (plain nn.Module.to: diffusers' override warns on every
    cast even for models with no fp32-only modules, which SD's UNet and VAE have none of)."""
    if any(p.dtype != dtype and p.is_floating_point() for p in module.parameters()):
        torch.nn.Module.to(module, dtype=dtype)
    return module


def _enable_upcast_attention(unet) -> None:
    """SD 2.x 768-v runs attention in fp32 (diffusers' `upcast_attention: true`)."""
    from diffusers.models.attention_processor import Attention

    for m in unet.modules():
        if isinstance(m, Attention):
            m.upcast_attention = True
    unet.register_to_config(upcast_attention=True)


def place_pipeline(pipe, options: ModelOptions, device: torch.device) -> list[str]:
    """Set the speed options (attention, memory layout), then move the pipeline to its device, or
    set up CPU offload for --medvram / --lowvram."""
    from .speed import apply_speed_options

    apply_speed_options(pipe, options)
    mode = options.memory_mode
    if mode is not MemoryMode.NONE and device.type != "cpu":
        if mode is MemoryMode.MEDVRAM:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
        return []
    pipe.to(device)
    if mode is not MemoryMode.NONE:
        return [f"memory mode {mode.value} has no effect on the CPU"]
    return []


# ---------------------------------------------------------------------------------------------
# VAE files and diffusers folders


def vae_state_from_file(path: Path) -> dict[str, torch.Tensor]:
    """A standalone VAE file's tensors without prefixes or training leftovers."""
    tensors = read_state_dict(path).tensors
    out = {}
    for k, v in tensors.items():
        for p in ("first_stage_model.", "vae."):
            if k.startswith(p):
                k = k[len(p):]
                break
        if k.startswith(("loss.", "model_ema.")):
            continue
        out[k] = v
    if not out:
        raise CheckpointError(path, "the file holds no VAE weights")
    return out


def load_vae_file(path: Path, reference, *, dtype: Optional[torch.dtype] = None, device=None):
    """An AutoencoderKL from a VAE file (original SD/SDXL layout, or diffusers layout), configured
    like `reference` (the checkpoint's own VAE: its scaling factor stays) with the file's shapes."""
    from diffusers import AutoencoderKL

    path = Path(path)
    state = vae_state_from_file(path)
    base = dict(reference.config)
    try:
        if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in state):
            cfg = base  # already diffusers layout
            vae = _empty(lambda: AutoencoderKL.from_config(cfg))
            vae = _assign(vae, state, "VAE", path)
        else:
            cfg = infer_vae_config({k: tuple(v.shape) for k, v in state.items()}, base, "")
            vae = build_vae(state, cfg, path)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(path, exc.reason) from None
    if vae.config.latent_channels != reference.config.latent_channels:
        raise UnsupportedModelError(
            path, f"this VAE has {vae.config.latent_channels} latent channels; the model needs {reference.config.latent_channels}"
        )
    cast_module(vae, dtype if dtype is not None else reference.dtype)
    if device is not None:
        vae.to(device)
    return vae


def _folder_family(pipe) -> str:
    unet_cfg = pipe.unet.config
    if unet_cfg.get("addition_embed_type") == "text_time":
        return "sdxl" if getattr(pipe, "text_encoder", None) is not None else "sdxl-refiner"
    te = getattr(pipe, "text_encoder", None)
    if te is not None and te.config.hidden_act == "gelu":
        return "sd2"
    if unet_cfg.get("cross_attention_dim") == 1024:
        return "sd2"
    return "sd1"


def load_diffusers_folder(folder: Path, options: ModelOptions, *, device=None, dtype=None, vae_dtype=None) -> BuiltPipeline:
    """A diffusers folder via from_pretrained(local_files_only=True); tokenizers from configs/ if absent."""
    import diffusers

    from .options import resolve_device, resolve_dtypes

    folder = Path(folder)
    device = device if device is not None else resolve_device(options)
    if dtype is None or vae_dtype is None:
        d, vd = resolve_dtypes(options, device)
        dtype, vae_dtype = dtype or d, vae_dtype or vd
    try:
        index = _read_json(folder / "model_index.json")
    except (OSError, ValueError) as exc:
        raise CheckpointError(folder, f"model_index.json is unreadable ({exc})") from None
    cls_name = index.get("_class_name", "")
    if cls_name not in _ALLOWED_FOLDER_PIPELINES:
        raise UnsupportedModelError(folder, f"pipeline class {cls_name!r} is not a Stable Diffusion pipeline")
    cls = getattr(diffusers, cls_name)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}  # `torch_dtype` is deprecated
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if "feature_extractor" in index:
        kwargs["feature_extractor"] = None
    if cls_name.startswith("StableDiffusionXL"):
        kwargs["add_watermarker"] = False
    for tok_name, te_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        spec = index.get(tok_name)
        if spec and spec[0] is not None and not (folder / tok_name).is_dir():
            pad = CLIP_PAD
            try:
                te_cfg = _read_json(folder / te_name / "config.json")
                pad = OPENCLIP_PAD if te_cfg.get("hidden_act") == "gelu" else CLIP_PAD
            except (OSError, ValueError):
                pass
            kwargs[tok_name] = build_tokenizer(pad)
    try:
        pipe = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(folder, f"the diffusers folder could not be loaded ({first})") from None
    cast_module(pipe.vae, vae_dtype)
    family = _folder_family(pipe)
    prediction = pipe.scheduler.config.get("prediction_type", EPSILON)
    variant = family
    in_ch = pipe.unet.config.in_channels
    if in_ch == 9 and family in ("sd1", "sd2", "sdxl"):
        variant = family + "-inpaint"
    elif family == "sd2" and prediction == V_PREDICTION:
        variant = "sd2-v"
    arch = Architecture(variant=variant, prediction_type=prediction, prediction_source="scheduler config", in_channels=in_ch)
    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    native = int(pipe.unet.config.sample_size) * vae_factor
    warnings = place_pipeline(pipe, options, device)
    return BuiltPipeline(pipe, arch, native, warnings)
