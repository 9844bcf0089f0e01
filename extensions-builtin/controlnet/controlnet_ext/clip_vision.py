"""The CLIP vision encoders IP-Adapter runs on: find the file, load it, preprocess a picture.

Files are the image tower in transformers' `CLIPVisionModelWithProjection` key layout
(`vision_model.*`, `visual_projection.weight`), as sd-webui-controlnet's `clip_h.pth` / `clip_g.pth`,
h94's `image_encoder/model.safetensors` and ComfyUI's `CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors`
ship them. The two real encoders' configs live in `configs/clip_vision/`; a file whose shapes match
neither (the tests' tiny encoders) gets a config read from its shapes (`config_from_shapes`).

Preprocessing is CLIPImageProcessor's (resize the short side to 224 bicubic, centre crop, CLIP
mean/std), done here with PIL and torch so no processor files are needed.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from controlnet_ext.clip_vision_files import ENCODER_FILES

if TYPE_CHECKING:
    import torch
    from PIL import Image

ENCODER_CONFIG_DIRS: dict[str, str] = {"clip_h": "vit-h-14", "clip_g": "vit-bigg-14"}
ENCODER_LABELS: dict[str, str] = {"clip_h": "CLIP ViT-H/14 (laion2B)", "clip_g": "CLIP ViT-bigG/14 (laion2B)"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_VISION = "vision_model."


class ClipVisionMissingError(FileNotFoundError):
    """No file for an encoder in models/clip_vision: names the file to put there."""

    def __init__(self, folder: Path, encoder: str) -> None:
        names = ENCODER_FILES.get(encoder, ())
        others = f" (or one of {', '.join(names[1:])})" if len(names) > 1 else ""
        self.folder, self.encoder = Path(folder), encoder
        super().__init__(f"IP-Adapter needs the {ENCODER_LABELS.get(encoder, encoder)} image encoder: put "
                         f"{names[0] if names else encoder} in {folder}{others}")


class ClipVisionFileError(ValueError):
    """A file in models/clip_vision that is not a usable CLIP vision encoder: names the file and why."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = Path(path)
        super().__init__(f"CLIP vision encoder {self.path.name}: {why}")


def find_clip_vision(folder: Path, encoder: str) -> Optional[Path]:
    """The file for `encoder` ("clip_h" | "clip_g") in `folder`, by the accepted names in their
    order (case-insensitive); None when there is none."""
    if encoder not in ENCODER_FILES:
        raise ValueError(f"unknown CLIP vision encoder {encoder!r}; one of {', '.join(ENCODER_FILES)}")
    folder = Path(folder)
    if not folder.is_dir():
        return None
    present = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for name in ENCODER_FILES[encoder]:
        if name.lower() in present:
            return present[name.lower()]
    return None


def require_clip_vision(folder: Path, encoder: str) -> Path:
    path = find_clip_vision(folder, encoder)
    if path is None:
        raise ClipVisionMissingError(folder, encoder)
    return path


# ---------------------------------------------------------------------------------------------
# configs


def shipped_config(encoder: str) -> dict[str, Any]:
    from modules.paths import CONFIGS_DIR

    raw = json.loads((CONFIGS_DIR / "clip_vision" / ENCODER_CONFIG_DIRS[encoder] / "config.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """A CLIPVisionConfig dict read from a vision tower's tensor shapes.

    Read from the weights: hidden_size, patch_size, num_channels, image_size (position count),
    num_hidden_layers, intermediate_size, projection_dim. Not in the weights, chosen so:
    num_attention_heads (q/k/v are hidden x hidden whatever the split): 16 as both real encoders
    use, or the largest power of two below it that divides hidden_size; hidden_act "gelu" and
    layer_norm_eps 1e-5 (OpenCLIP's towers, which every IP-Adapter encoder is).
    """
    hidden = shapes[_VISION + "embeddings.class_embedding"][0]
    patch_w = shapes[_VISION + "embeddings.patch_embedding.weight"]
    positions = shapes[_VISION + "embeddings.position_embedding.weight"][0]
    side = round((positions - 1) ** 0.5)
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))}
    heads = 16
    while hidden % heads:
        heads //= 2
    return {"hidden_size": hidden, "patch_size": patch_w[-1], "num_channels": patch_w[1], "image_size": side * patch_w[-1],
            "num_hidden_layers": len(layers), "intermediate_size": shapes[_VISION + "encoder.layers.0.mlp.fc1.weight"][0],
            "projection_dim": shapes["visual_projection.weight"][0], "num_attention_heads": heads, "hidden_act": "gelu",
            "layer_norm_eps": 1e-5}


_SHAPE_FIELDS = ("hidden_size", "patch_size", "num_channels", "image_size", "num_hidden_layers", "intermediate_size",
                 "projection_dim")


def vision_config(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, Any], Optional[str]]:
    """(config, encoder) where encoder is "clip_h"/"clip_g" when the shapes are a real encoder's."""
    inferred = config_from_shapes(shapes)
    for encoder in ENCODER_CONFIG_DIRS:
        cfg = shipped_config(encoder)
        if all(cfg[f] == inferred[f] for f in _SHAPE_FIELDS):
            return cfg, encoder
    return inferred, None


# ---------------------------------------------------------------------------------------------
# loading


def _vision_state(path: Path) -> dict[str, "torch.Tensor"]:
    from modules.models.checkpoint_io import read_state_dict
    from modules.models.errors import CheckpointError

    try:
        tensors = read_state_dict(path).tensors
    except CheckpointError as exc:
        raise ClipVisionFileError(path, str(exc)) from None
    if any(k.startswith("visual.") for k in tensors) and not any(k.startswith(_VISION) for k in tensors):
        raise ClipVisionFileError(path, "it is in OpenCLIP's key layout (visual.*); use the transformers-layout file "
                                        "(clip_h.pth / CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors)")
    needed = (_VISION + "embeddings.class_embedding", _VISION + "embeddings.patch_embedding.weight",
              _VISION + "embeddings.position_embedding.weight", _VISION + "encoder.layers.0.mlp.fc1.weight",
              "visual_projection.weight")
    missing = [k for k in needed if k not in tensors]
    if missing:
        raise ClipVisionFileError(path, f"not a CLIP vision encoder with projection (missing {', '.join(missing)})")
    # a whole CLIPModel file holds the text tower too: keep the vision side only
    return {k: v for k, v in tensors.items() if k.startswith(_VISION) or k == "visual_projection.weight"}


def load_clip_vision(path: Path, device: Any = None, dtype: Any = None):
    """The file as a transformers CLIPVisionModelWithProjection in eval mode on `device` in `dtype`."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    state = _vision_state(path)
    cfg, _ = vision_config({k: tuple(v.shape) for k, v in state.items()})
    config = CLIPVisionConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = CLIPVisionModelWithProjection(config)
    expected = set(model.state_dict())
    state = {k: v for k, v in state.items() if k in expected}  # position_ids buffers of older saves
    missing = sorted(expected - set(state))
    if missing:
        raise ClipVisionFileError(path, f"{len(missing)} tensors are missing (first: {missing[0]})")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ClipVisionFileError(path, f"its tensors do not fit the encoder ({str(exc).splitlines()[0]})") from None
    return model.to(device=device or torch.device("cpu"), dtype=dtype or torch.float32).eval()


class ClipVisionCache:
    """The last encoder(s) loaded, keyed by file, place and dtype: a 2.5 GB encoder is not read again
    for every job. One lives on the ControlNet extension (no module-level state)."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: list[tuple[tuple, Any]] = []

    def get(self, path: Path, device: Any, dtype: Any):
        path = Path(path)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device), str(dtype))
        with self._lock:
            for i, (k, model) in enumerate(self._items):
                if k == key:
                    self._items.append(self._items.pop(i))
                    return model
            model = load_clip_vision(path, device, dtype)
            self._items.append((key, model))
            del self._items[:-self.capacity]
            return model


# ---------------------------------------------------------------------------------------------
# preprocessing


def preprocess(image: "Image.Image", size: int = 224) -> "torch.Tensor":
    """[1, 3, size, size] float32 pixel values as CLIPImageProcessor makes them: RGB, short side
    resized to `size` (bicubic, on uint8 as PIL does), centre crop, scaled to 0..1, CLIP mean/std."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    image = image.convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    resized = np.asarray(image.resize((new_w, new_h), resample=PILImage.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top:top + size, left:left + size]
    pixels = crop.astype(np.float64) * (1 / 255)
    pixels = ((pixels - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).astype(np.float32)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy()).unsqueeze(0)


__all__ = ["ENCODER_CONFIG_DIRS", "ENCODER_LABELS", "ClipVisionMissingError", "ClipVisionFileError", "find_clip_vision",
           "require_clip_vision", "shipped_config", "config_from_shapes", "vision_config", "load_clip_vision",
           "ClipVisionCache", "preprocess"]
