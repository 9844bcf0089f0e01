"""Real-size Stable Diffusion pipelines with random weights, built from the configs in configs/
(no download): SD 1.5 (configs/sd1) and SDXL base (configs/sdxl).

Modules are built on the meta device (no memory, no slow default init), then every parameter is
filled with seeded random values straight on the target device in the target dtype, scaled like
trained weights (norm weights near 1, small biases and embeddings, 1/sqrt(fan_in) elsewhere) so
activations stay finite in fp16 through the whole UNet and VAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from modules.models.loaded import LoadedModel, ModelFamily
from modules.models.single_file import (CLIP_PAD, OPENCLIP_PAD, _read_json, assemble_pipeline, build_scheduler,
                                        build_tokenizer, family_config_dir)

FAMILIES = {"sd1": ModelFamily.SD1, "sdxl": ModelFamily.SDXL}
NATIVE_SIZE = {"sd1": 512, "sdxl": 1024}


@dataclass
class RandomModel:
    pipe: Any
    model: LoadedModel  # the same pipe, as the engine gets it from the registry
    family: str
    params: int  # parameter count over all components


def _config(family: str, component: str) -> dict:
    cfg = _read_json(family_config_dir(family) / component / "config.json")
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _meta_module(component: str, cfg: dict) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on meta; buffers (position ids) stay real
        if component == "unet":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel.from_config(cfg)
        if component == "vae":
            from diffusers import AutoencoderKL

            return AutoencoderKL.from_config(cfg)
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        arch = cfg.get("architectures", ["CLIPTextModel"])[0]
        config = CLIPTextConfig(**{k: v for k, v in cfg.items() if k != "architectures"})
        return (CLIPTextModelWithProjection if "WithProjection" in arch else CLIPTextModel)(config)


def _fill(module: torch.nn.Module, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> None:
    for mod_name, mod in module.named_modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            full = f"{mod_name}.{name}".lower()
            shape = tuple(p.shape)
            t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
            if "norm" in full or ".ln_" in full:
                t = 1.0 + 0.1 * t if name == "weight" else 0.02 * t
            elif name == "bias" or "embedding" in full:
                t = 0.02 * t
            else:
                fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
                t = t / math.sqrt(max(fan_in, 1))
            mod._parameters[name] = torch.nn.Parameter(t.to(dtype), requires_grad=False)
    module.to(device)  # the buffers
    module.eval().requires_grad_(False)


def build_random_model(family: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> RandomModel:
    """A ready pipeline of `family` ("sd1" or "sdxl") on `device` in `dtype`, random weights."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    gen = torch.Generator(device).manual_seed(seed)
    parts: dict[str, torch.nn.Module] = {}
    for component in ("text_encoder", "text_encoder_2", "unet", "vae"):
        if not (family_config_dir(family) / component / "config.json").is_file():
            continue
        module = _meta_module(component, _config(family, component))
        _fill(module, gen, device, dtype)
        parts[component] = module
    extra = {}
    if family == "sdxl":
        extra = dict(text_encoder_2=parts["text_encoder_2"], tokenizer_2=build_tokenizer(OPENCLIP_PAD))
    pipe = assemble_pipeline(family, vae=parts["vae"], unet=parts["unet"], scheduler=build_scheduler(family_config_dir(family), None),
                             text_encoder=parts["text_encoder"], tokenizer=build_tokenizer(CLIP_PAD), **extra)
    pipe.set_progress_bar_config(disable=True)
    name = f"random-{family}"
    model = LoadedModel(title=f"{name} [0000000000]", name=name, family=FAMILIES[family], pipe=pipe,
                        native_size=NATIVE_SIZE[family], short_hash="0000000000")
    params = sum(p.numel() for m in parts.values() for p in m.parameters())
    return RandomModel(pipe=pipe, model=model, family=family, params=params)
