"""The CLIP vision encoders the IP-Adapter modules use, and the file names accepted for each in
`models/clip_vision` (sd-webui-controlnet's downloads, ComfyUI's and Forge's names, h94's release).
The first name of each is the one messages tell users to put there."""

from __future__ import annotations

ENCODER_FILES: dict[str, tuple[str, ...]] = {
    "clip_h": ("clip_h.pth", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip_vision_vit_h.safetensors",
               "model.safetensors"),
    "clip_g": ("clip_g.pth", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors", "clip_vision_g.safetensors"),
}

# sd-webui-controlnet's IP-Adapter preprocessor modules -> the encoder each runs.
MODULE_ENCODERS: dict[str, str] = {
    "ip-adapter_clip_sd15": "clip_h",
    "ip-adapter_clip_sdxl": "clip_g",
    "ip-adapter_clip_sdxl_plus_vith": "clip_h",
}

__all__ = ["ENCODER_FILES", "MODULE_ENCODERS"]
