"""Build single-file checkpoints in the real original LDM/SGM layouts, with random weights.

Each component is described by a diffusers/transformers config, built on the meta device (shapes
only, no memory), filled with seeded random tensors in diffusers layout and renamed to the
original layout with `modules.models.original_layout` (our own diffusers->LDM converter). The
loader goes the other way with diffusers' converters, so a round trip checks both.

`size="tiny"` keeps every family's structure (levels with and without attention, transformer
depths, two text encoders, the SDXL size conditioning) at tiny widths; `size="real"` uses the
shipped configs (SD 1.x fp16 is ~2 GB).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from modules.models import original_layout as ol
from modules.paths import CONFIGS_DIR

VOCAB, POSITIONS = 49408, 77  # the real CLIP tokenizer is used, so the vocab stays real


def _clip(hidden=32, layers=2, act="quick_gelu", proj=32, cls="CLIPTextModel"):
    return {"architectures": [cls], "hidden_size": hidden, "intermediate_size": hidden * 2, "num_attention_heads": 2,
            "num_hidden_layers": layers, "hidden_act": act, "projection_dim": proj, "vocab_size": VOCAB,
            "max_position_embeddings": POSITIONS, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}


_TINY_VAE = {"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
             "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1, "latent_channels": 4,
             "norm_num_groups": 32, "sample_size": 64, "in_channels": 3, "out_channels": 3}
_TINY_SD_UNET = {"block_out_channels": [32, 64], "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 16,
                 "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32}
_TINY_XL_UNET = {"block_out_channels": [32, 32, 64], "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 16,
                 "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 "transformer_layers_per_block": [1, 1, 2], "cross_attention_dim": 64, "attention_head_dim": [1, 2, 2],
                 "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                 "projection_class_embeddings_input_dim": 32 + 6 * 8}
_TINY_REFINER_UNET = {**_TINY_XL_UNET, "block_out_channels": [32, 64, 64],
                      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                      "transformer_layers_per_block": 2, "cross_attention_dim": 32, "attention_head_dim": [1, 2, 2],
                      "projection_class_embeddings_input_dim": 32 + 5 * 8}

# variant -> (config folder, tiny overrides per component)
TINY: dict[str, dict] = {
    "sd1": {"unet": {**_TINY_SD_UNET, "attention_head_dim": 8}, "vae": _TINY_VAE, "text_encoder": _clip()},
    "sd1-inpaint": {"unet": {**_TINY_SD_UNET, "attention_head_dim": 8, "in_channels": 9}, "vae": _TINY_VAE, "text_encoder": _clip()},
    "sd2": {"unet": {**_TINY_SD_UNET, "attention_head_dim": [1, 2], "use_linear_projection": True}, "vae": _TINY_VAE,
            "text_encoder": _clip(act="gelu")},
    "sd2-inpaint": {"unet": {**_TINY_SD_UNET, "attention_head_dim": [1, 2], "use_linear_projection": True, "in_channels": 9},
                    "vae": _TINY_VAE, "text_encoder": _clip(act="gelu")},
    "sdxl": {"unet": _TINY_XL_UNET, "vae": _TINY_VAE, "text_encoder": _clip(),
             "text_encoder_2": _clip(act="gelu", cls="CLIPTextModelWithProjection")},
    "sdxl-inpaint": {"unet": {**_TINY_XL_UNET, "in_channels": 9}, "vae": _TINY_VAE, "text_encoder": _clip(),
                     "text_encoder_2": _clip(act="gelu", cls="CLIPTextModelWithProjection")},
    "sdxl-refiner": {"unet": _TINY_REFINER_UNET, "vae": _TINY_VAE,
                     "text_encoder_2": _clip(act="gelu", cls="CLIPTextModelWithProjection")},
}
CONFIG_DIR = {"sd1": "sd1", "sd1-inpaint": "sd1-inpaint", "sd2": "sd2", "sd2-v": "sd2-v", "sd2-inpaint": "sd2",
              "sdxl": "sdxl", "sdxl-inpaint": "sdxl-inpaint", "sdxl-refiner": "sdxl-refiner"}
VARIANTS = list(TINY)


@dataclass
class FakeCheckpoint:
    path: Path
    variant: str
    original: dict[str, torch.Tensor]  # what the file holds
    components: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # diffusers-layout tensors
    configs: dict[str, dict] = field(default_factory=dict)


def _read(p: Path) -> dict:
    return json.loads(p.read_text())


def component_configs(variant: str, size: str = "tiny") -> dict[str, dict]:
    base = CONFIGS_DIR / CONFIG_DIR[variant]
    out = {}
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        f = base / comp / "config.json"
        if not f.is_file():
            continue
        cfg = {k: v for k, v in _read(f).items() if not k.startswith("_")}
        if size == "tiny":
            if comp not in TINY[variant]:
                continue
            cfg.update(copy.deepcopy(TINY[variant][comp]))
        if variant == "sd2-inpaint" and comp == "unet":
            cfg["in_channels"] = 9
        out[comp] = cfg
    return out


def _meta_model(comp: str, cfg: dict):
    from accelerate import init_empty_weights

    with init_empty_weights():
        if comp == "unet":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel.from_config(cfg)
        if comp == "vae":
            from diffusers import AutoencoderKL

            return AutoencoderKL.from_config(cfg)
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        c = CLIPTextConfig(**{k: v for k, v in cfg.items() if k != "architectures"})
        cls = CLIPTextModelWithProjection if "WithProjection" in cfg.get("architectures", [""])[0] else CLIPTextModel
        return cls(c)


def _random_like(name: str, shape, gen: torch.Generator, dtype) -> torch.Tensor:
    n = math.prod(shape) if shape else 1
    base = torch.randn(n, generator=gen).reshape(shape) if shape else torch.randn((), generator=gen)
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name.lower() or ".ln_" in name or "layer_norm" in name:
        t = 1.0 + 0.1 * base if leaf == "weight" else 0.02 * base
    elif leaf == "bias":
        t = 0.02 * base
    elif "embedding" in name:
        t = 0.02 * base
    else:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        t = base / math.sqrt(max(fan_in, 1))
    return t.to(dtype)


def random_state(comp: str, cfg: dict, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Seeded random tensors with a component's diffusers names and shapes."""
    model = _meta_model(comp, cfg)
    gen = torch.Generator().manual_seed(seed)
    return {k: _random_like(k, tuple(v.shape), gen, dtype) for k, v in model.state_dict().items()}


def make_checkpoint(
    path: Path,
    variant: str = "sd1",
    *,
    size: str = "tiny",
    seed: int = 0,
    dtype=torch.float32,
    fmt: Optional[str] = None,
    probe: Optional[str] = None,
    global_step: Optional[int] = None,
    extra: Optional[dict[str, torch.Tensor]] = None,
    position_ids: bool = True,
) -> FakeCheckpoint:
    """Write a checkpoint of `variant` to `path` (.safetensors or .ckpt by suffix, or `fmt`).

    probe="v"/"epsilon" sets the UNet's conv_out so that A1111's v-prediction probe answers so
    (zero weights, bias -3 or 0). `extra` adds tensors (e.g. {"v_pred": torch.tensor([])}).
    """
    path = Path(path)
    fmt = fmt or ("ckpt" if path.suffix in (".ckpt", ".pt") else "safetensors")
    cfgs = component_configs(variant, size)
    comps = {c: random_state(c, cfg, seed + i, dtype) for i, (c, cfg) in enumerate(cfgs.items())}
    if probe is not None:
        comps["unet"]["conv_out.weight"].zero_()
        comps["unet"]["conv_out.bias"].fill_(-3.0 if probe == "v" else 0.0)

    sd: dict[str, torch.Tensor] = {}
    sd.update(ol.unet_to_original(comps["unet"], cfgs["unet"]))
    sd.update(ol.vae_to_original(comps["vae"], cfgs["vae"]))
    family = variant.split("-")[0] if not variant.startswith("sdxl-refiner") else "sdxl-refiner"
    gen = torch.Generator().manual_seed(seed + 99)
    if family == "sd1":
        sd.update(ol.clip_to_original(comps["text_encoder"], ol.SD1_CLIP_PREFIX))
        if position_ids:
            sd[ol.SD1_CLIP_PREFIX + "text_model.embeddings.position_ids"] = torch.arange(POSITIONS).unsqueeze(0)
    elif family == "sd2":
        te = ol.openclip_to_original(comps["text_encoder"], ol.SD2_OPENCLIP_PREFIX)
        # SD 2.x files hold the full OpenCLIP tower: one more (unused) layer and the projection
        hidden = cfgs["text_encoder"]["hidden_size"]
        n = cfgs["text_encoder"]["num_hidden_layers"]
        last = {k.replace(".resblocks.0.", f".resblocks.{n}."): _random_like(k, tuple(v.shape), gen, dtype)
                for k, v in te.items() if ".resblocks.0." in k}
        te.update(last)
        te[ol.SD2_OPENCLIP_PREFIX + "text_projection"] = _random_like("text_projection", (hidden, hidden), gen, dtype)
        te[ol.SD2_OPENCLIP_PREFIX + "logit_scale"] = torch.tensor(4.6052, dtype=dtype)
        sd.update(te)
    elif family == "sdxl":
        sd.update(ol.clip_to_original(comps["text_encoder"], ol.XL_CLIP_L_PREFIX))
        sd.update(ol.openclip_to_original(comps["text_encoder_2"], ol.XL_OPENCLIP_PREFIX))
        sd[ol.XL_OPENCLIP_PREFIX + "logit_scale"] = torch.tensor(4.6052, dtype=dtype)
    else:  # refiner
        sd.update(ol.openclip_to_original(comps["text_encoder_2"], ol.REFINER_OPENCLIP_PREFIX))
        sd[ol.REFINER_OPENCLIP_PREFIX + "logit_scale"] = torch.tensor(4.6052, dtype=dtype)
    if extra:
        sd.update(extra)
    save_state(path, sd, fmt, global_step=global_step)
    return FakeCheckpoint(path, variant, sd, comps, cfgs)


def save_state(path: Path, sd: dict, fmt: str = "safetensors", *, global_step: Optional[int] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        obj = {"state_dict": sd}
        if global_step is not None:
            obj["global_step"] = global_step
        torch.save(obj, path)


def make_vae_file(
    path: Path, *, size: str = "tiny", seed: int = 7, layout: str = "original", prefix: str = "", dtype=torch.float32,
    variant: str = "sd1",
) -> dict[str, torch.Tensor]:
    """A standalone VAE file (like vae-ft-mse-840000 or sdxl_vae); returns its diffusers tensors."""
    cfg = component_configs(variant, size)["vae"]
    state = random_state("vae", cfg, seed, dtype)
    sd = ol.vae_to_original(state, cfg, prefix=prefix) if layout == "original" else dict(state)
    save_state(Path(path), sd, "safetensors" if str(path).endswith(".safetensors") else "ckpt")
    return state


# ---------------------------------------------------------------------------------------------
# bad files


class _Payload:
    """Pickles as a call to exec() that writes `target`: what a malicious .ckpt does."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def make_malicious_ckpt(path: Path, target: Path) -> None:
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, "x": _Payload(target)}, path)


def make_empty(path: Path) -> None:
    Path(path).write_bytes(b"")


def make_corrupt_header(path: Path) -> None:
    body = b"{this is not json" + b" " * 40
    Path(path).write_bytes(len(body).to_bytes(8, "little") + body + b"\0" * 64)


def make_truncated(path: Path, source: Path, keep: float = 0.5) -> None:
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def make_lora_like(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(path))


def original_shapes(variant: str, size: str = "real") -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint in the original layout, built on the meta device (no memory)."""
    cfgs = component_configs(variant, size)
    meta = {c: _meta_model(c, cfg).state_dict() for c, cfg in cfgs.items()}
    sd: dict = {}
    sd.update(ol.unet_to_original(meta["unet"], cfgs["unet"]))
    sd.update(ol.vae_to_original(meta["vae"], cfgs["vae"]))
    family = "sdxl-refiner" if variant == "sdxl-refiner" else variant.split("-")[0]
    if family == "sd1":
        sd.update(ol.clip_to_original(meta["text_encoder"], ol.SD1_CLIP_PREFIX))
        sd[ol.SD1_CLIP_PREFIX + "text_model.embeddings.position_ids"] = torch.empty(1, POSITIONS, device="meta")
    elif family == "sd2":
        te = ol.openclip_to_original(meta["text_encoder"], ol.SD2_OPENCLIP_PREFIX)
        n = cfgs["text_encoder"]["num_hidden_layers"]
        te.update({k.replace(".resblocks.0.", f".resblocks.{n}."): v for k, v in te.items() if ".resblocks.0." in k})
        hidden = cfgs["text_encoder"]["hidden_size"]
        te[ol.SD2_OPENCLIP_PREFIX + "text_projection"] = torch.empty(hidden, hidden, device="meta")
        te[ol.SD2_OPENCLIP_PREFIX + "logit_scale"] = torch.empty((), device="meta")
        sd.update(te)
    elif family == "sdxl":
        sd.update(ol.clip_to_original(meta["text_encoder"], ol.XL_CLIP_L_PREFIX))
        sd[ol.XL_CLIP_L_PREFIX + "text_model.embeddings.position_ids"] = torch.empty(1, POSITIONS, device="meta")
        sd.update(ol.openclip_to_original(meta["text_encoder_2"], ol.XL_OPENCLIP_PREFIX))
        sd[ol.XL_OPENCLIP_PREFIX + "logit_scale"] = torch.empty((), device="meta")
    else:
        sd.update(ol.openclip_to_original(meta["text_encoder_2"], ol.REFINER_OPENCLIP_PREFIX))
        sd[ol.REFINER_OPENCLIP_PREFIX + "logit_scale"] = torch.empty((), device="meta")
    return {k: tuple(v.shape) for k, v in sd.items()}
