"""Which model layer a LoRA file's layer key names, for SD 1.x, 2.x and XL in diffusers form.

Built once per loaded model from its own `named_modules`, so it fits whatever the model holds:

* kohya: `lora_unet_` + the UNet module path with dots as underscores, in diffusers naming
  (`lora_unet_down_blocks_0_attentions_0_proj_in`, kohya's SD 1.x/2.x) or in the original LDM/SGM
  naming (`lora_unet_input_blocks_1_1_proj_in`, kohya's SDXL and many LyCORIS files; translated
  with the repo's diffusers->LDM renamer); `lora_te_` / `lora_te1_` for the (first) text encoder,
  `lora_te2_` for SDXL's second, in transformers naming (`text_model_encoder_layers_0_mlp_fc1`,
  with or without the `text_model` level, which transformers 5 no longer has).
* diffusers/PEFT: `unet.`, `text_encoder.`, `text_encoder_2.` + the dotted module path (PEFT's own
  `base_model.model.` prefix is read as the UNet); attention-processor keys
  (`attn1.processor.to_out_lora`) name the projection they adapt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from modules.models import original_layout

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_KOHYA_PREFIXES = {"unet": ("lora_unet_",), "text_encoder": ("lora_te_", "lora_te1_"), "text_encoder_2": ("lora_te2_",)}


@dataclass(frozen=True)
class LayerTarget:
    component: str  # "unet", "text_encoder", "text_encoder_2"
    module: str  # dotted module path inside the component
    weight: torch.nn.Parameter

    @property
    def is_text_encoder(self) -> bool:
        return self.component != "unet"


class LayerMap:
    """File layer key -> LayerTarget for one pipeline."""

    def __init__(self, pipe: Any) -> None:
        self._targets: dict[str, LayerTarget] = {}
        for component in COMPONENTS:
            model = getattr(pipe, component, None)
            if model is None:
                continue
            ldm_rules = _ldm_rules(model) if component == "unet" else None
            for name, module in model.named_modules():
                weight = getattr(module, "weight", None)
                if not name or not isinstance(weight, torch.nn.Parameter):
                    continue
                target = LayerTarget(component, name, weight)
                for spelling in _text_encoder_spellings(name) if component != "unet" else (name,):
                    self._targets.setdefault(f"{component}.{spelling}", target)
                    for prefix in _KOHYA_PREFIXES[component]:
                        self._targets.setdefault(prefix + spelling.replace(".", "_"), target)
                if ldm_rules is not None:
                    try:
                        ldm = original_layout.unet_key_to_original(name + ".weight", ldm_rules)[: -len(".weight")]
                    except KeyError:
                        continue
                    self._targets.setdefault("lora_unet_" + ldm.replace(".", "_"), target)

    def find(self, key: str) -> Optional[LayerTarget]:
        for candidate in _spellings(key):
            found = self._targets.get(candidate)
            if found is not None:
                return found
        return None


def _text_encoder_spellings(name: str) -> tuple[str, ...]:
    """transformers 5 dropped the `text_model.` level of CLIPTextModel that kohya and older
    diffusers files name (`lora_te_text_model_encoder_layers_0_...`): both spellings are taken."""
    if name.startswith("text_model."):
        return name, name[len("text_model."):]
    return name, "text_model." + name


def _ldm_rules(unet: Any) -> Optional[list]:
    try:
        return original_layout.unet_prefix_map(unet.config)
    except (KeyError, ValueError, TypeError):  # not an SD-shaped UNet: diffusers names only
        return None


def _spellings(key: str) -> list[str]:
    """The names a key may stand for: as written, and diffusers-processor / PEFT forms rewritten."""
    out = [key]
    if key.startswith("base_model.model."):
        key = "unet." + key[len("base_model.model."):]
        out.append(key)
    if ".processor." in key:  # attn1.processor.to_q(_lora) -> attn1.to_q ; to_out -> to_out.0
        key = key.replace(".processor.", ".")
        out.append(key)
    if key.endswith(".to_out"):
        out.append(key + ".0")
    return out


__all__ = ["LayerMap", "LayerTarget", "COMPONENTS"]
