"""Recognise a checkpoint's architecture from its tensor names and shapes. Torch-free.

Works on `{key: shape}` so it runs both on a safetensors header (the catalog, no weights read) and
on a loaded state dict. Families and variants:

    sd1            SD 1.x                        CLIP ViT-L text encoder, UNet context 768
    sd1-inpaint    SD 1.x inpainting             UNet input 9 channels
    sd2            SD 2.x 512 (epsilon)          OpenCLIP ViT-H text encoder, UNet context 1024
    sd2-v          SD 2.x 768 (v-prediction)
    sd2-inpaint    SD 2.x inpainting
    sdxl           SDXL base                     CLIP-L + OpenCLIP bigG (conditioner.embedders.0/1)
    sdxl-inpaint   SDXL inpainting               UNet input 9 channels
    sdxl-refiner   SDXL refiner                  OpenCLIP bigG only (conditioner.embedders.0)

SD 2.x 512 and 768-v have the same shapes. The prediction type comes from, in order: a `.yaml`
beside the file (`parameterization: "v"`, like A1111), a `v_pred` marker tensor, the Lightning
`global_step` (875000 is SD 2.0-base, diffusers' heuristic); else it is left None and the loader
runs A1111's probe (one UNet call at t=999 on a constant input: v models answer far below -1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .errors import UnsupportedModelError

UNET = "model.diffusion_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_OPENCLIP = "cond_stage_model.model."
XL_CLIP_L = "conditioner.embedders.0.transformer."
XL_OPENCLIP_BASE = "conditioner.embedders.1.model."
XL_OPENCLIP_REFINER = "conditioner.embedders.0.model."
VAE_PREFIX = "first_stage_model."

EPSILON = "epsilon"
V_PREDICTION = "v_prediction"

Shapes = Mapping[str, Sequence[int]]

_FAMILY_OF_VARIANT = {
    "sd1": "sd1", "sd1-inpaint": "sd1",
    "sd2": "sd2", "sd2-v": "sd2", "sd2-inpaint": "sd2",
    "sdxl": "sdxl", "sdxl-inpaint": "sdxl",
    "sdxl-refiner": "sdxl-refiner",
}
_CONFIG_OF_VARIANT = {
    "sd1": "sd1", "sd1-inpaint": "sd1-inpaint",
    "sd2": "sd2", "sd2-v": "sd2-v", "sd2-inpaint": "sd2",  # sd2-inpaint: sd2 with a 9-channel input
    "sdxl": "sdxl", "sdxl-inpaint": "sdxl-inpaint", "sdxl-refiner": "sdxl-refiner",
}
_NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sdxl": 1024, "sdxl-refiner": 1024}
_LABELS = {
    "sd1": "SD 1.x", "sd1-inpaint": "SD 1.x inpainting", "sd2": "SD 2.x 512", "sd2-v": "SD 2.x 768-v",
    "sd2-inpaint": "SD 2.x inpainting", "sdxl": "SDXL", "sdxl-inpaint": "SDXL inpainting",
    "sdxl-refiner": "SDXL refiner",
}


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint is. `family_id` is a ModelFamily value (see `family`)."""

    variant: str
    prediction_type: Optional[str]  # None: not decided from the file (SD 2.x): probe when loaded
    prediction_source: str = "default"
    in_channels: int = 4

    @property
    def family_id(self) -> str:
        return _FAMILY_OF_VARIANT[self.variant]

    @property
    def family(self):
        """The loaded.ModelFamily (imported lazily: loaded.py imports torch)."""
        from .loaded import ModelFamily

        return ModelFamily(self.family_id)

    @property
    def config_name(self) -> str:
        return _CONFIG_OF_VARIANT[self.variant]

    @property
    def inpainting(self) -> bool:
        return self.in_channels == 9

    @property
    def is_xl(self) -> bool:
        return self.family_id in ("sdxl", "sdxl-refiner")

    @property
    def native_size(self) -> int:
        if self.variant == "sd2-v" or (self.family_id == "sd2" and self.prediction_type == V_PREDICTION):
            return 768
        return _NATIVE_SIZE[self.family_id]

    @property
    def label(self) -> str:
        return _LABELS[self.variant]

    def with_prediction(self, prediction_type: str, source: str) -> "Architecture":
        variant = self.variant
        if self.family_id == "sd2" and not self.inpainting:
            variant = "sd2-v" if prediction_type == V_PREDICTION else "sd2"
        return replace(self, variant=variant, prediction_type=prediction_type, prediction_source=source)


def _first(shapes: Shapes, pattern: str) -> Optional[tuple[str, Sequence[int]]]:
    rx = re.compile(pattern)
    for k in sorted(shapes):
        if rx.search(k):
            return k, shapes[k]
    return None


def unet_context_dim(shapes: Shapes, prefix: str = UNET) -> Optional[int]:
    hit = _first(shapes, "^" + re.escape(prefix) + r".*\.attn2\.to_k\.weight$")
    return int(hit[1][-1]) if hit else None


def _has_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def _not_a_checkpoint_reason(shapes: Shapes) -> str:
    keys = list(shapes)
    if not keys:
        return "the file holds no tensors"
    if any(k.startswith(("lora_unet_", "lora_te", "lora_te1_", "lora_te2_")) or ".lora_down." in k or ".lora_A." in k for k in keys):
        return "this is a LoRA, not a checkpoint; put it in models/Lora"
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.conv_in", "decoder.conv_in")) for k in keys):
        return "this is a VAE, not a checkpoint; put it in models/VAE"
    if any(k.startswith(("control_model.", "input_hint_block.")) for k in keys):
        return "this is a ControlNet, not a checkpoint; put it in models/ControlNet"
    if any(k in ("string_to_param", "emb_params", "clip_l", "clip_g") or k.startswith("string_to_param") for k in keys):
        return "this is a textual-inversion embedding; put it in embeddings/"
    if any(k.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for k in keys):
        return "these are diffusers-format weights of a single component, not an original-layout checkpoint"
    if any("joint_blocks." in k or "double_blocks." in k for k in keys):
        return "SD3/Flux checkpoints are not supported"
    return "no Stable Diffusion UNet weights (model.diffusion_model.*) found; not a supported checkpoint"


def read_yaml_parameterization(yaml_path: Path) -> Optional[str]:
    """The prediction type an A1111-style `.yaml` beside a checkpoint asks for, or None without one."""
    try:
        text = Path(yaml_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    param = None
    try:
        import yaml  # PyYAML; optional

        data = yaml.safe_load(text)
        params = ((data or {}).get("model") or {}).get("params") or {}
        param = params.get("parameterization")
    except Exception:
        m = re.search(r"^\s*parameterization\s*:\s*['\"]?(\w+)", text, re.MULTILINE)
        param = m.group(1) if m else None
    return V_PREDICTION if str(param).strip().lower() == "v" else EPSILON


def yaml_beside(path: Path) -> Optional[Path]:
    p = Path(path)
    for candidate in (p.with_suffix(".yaml"), p.with_suffix(".yml")):
        if candidate.is_file():
            return candidate
    return None


def detect_architecture(
    shapes: Shapes,
    source: Optional[Path] = None,
    *,
    yaml_path: Optional[Path] = None,
    global_step: Optional[int] = None,
) -> Architecture:
    """The architecture of an original-layout (LDM/SGM) checkpoint.

    `source` names the file in errors; a `.yaml` beside it is honoured unless `yaml_path` is given.
    Raises UnsupportedModelError naming the file when it is not a checkpoint we can load.
    """
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        raise UnsupportedModelError(source, _not_a_checkpoint_reason(shapes))
    in_ch = int(conv_in[1])
    if in_ch not in (4, 9):
        what = "instruct-pix2pix (8-channel)" if in_ch == 8 else f"{in_ch}-channel"
        raise UnsupportedModelError(source, f"{what} UNet checkpoints are not supported")
    ctx = unet_context_dim(shapes)

    if _has_prefix(shapes, XL_OPENCLIP_BASE):
        variant = "sdxl-inpaint" if in_ch == 9 else "sdxl"
    elif _has_prefix(shapes, XL_OPENCLIP_REFINER):
        variant = "sdxl-refiner"
    elif _has_prefix(shapes, SD2_OPENCLIP):
        variant = "sd2-inpaint" if in_ch == 9 else "sd2"
    elif _has_prefix(shapes, SD1_CLIP):
        variant = "sd1-inpaint" if in_ch == 9 else "sd1"
    elif ctx == 768:
        variant = "sd1-inpaint" if in_ch == 9 else "sd1"
    elif ctx == 1024:
        variant = "sd2-inpaint" if in_ch == 9 else "sd2"
    elif ctx == 2048:
        variant = "sdxl-inpaint" if in_ch == 9 else "sdxl"
    elif ctx == 1280:
        variant = "sdxl-refiner"
    else:
        raise UnsupportedModelError(
            source, f"a UNet with cross-attention width {ctx} and no known text encoder; not a supported checkpoint"
        )

    arch = Architecture(variant=variant, prediction_type=EPSILON, prediction_source="default", in_channels=in_ch)

    if yaml_path is None and source is not None:
        yaml_path = yaml_beside(Path(source))
    if yaml_path is not None:
        param = read_yaml_parameterization(yaml_path)
        if param is not None:
            return arch.with_prediction(param, f"yaml:{Path(yaml_path).name}")
    if "v_pred" in shapes:
        return arch.with_prediction(V_PREDICTION, "v_pred key")
    if arch.family_id == "sd2" and not arch.inpainting:
        if global_step == 875000:
            return arch.with_prediction(EPSILON, "global_step")
        return replace(arch, prediction_type=None, prediction_source="undecided")
    return arch


def describe(shapes: Shapes, source: Optional[Path] = None) -> tuple[Optional[Architecture], Optional[str]]:
    """(architecture, None) or (None, reason): the catalog's non-raising form."""
    try:
        return detect_architecture(shapes, source), None
    except UnsupportedModelError as exc:
        return None, exc.reason
