"""NSFW blacking (A1111's old `filter_nsfw` setting): diffusers' `StableDiffusionSafetyChecker`
flags an image, and the image is replaced by a black one of the same size.

The checker and its CLIP image processor are read from `models/safety_checker`, laid out as
diffusers and the CompVis/stable-diffusion-safety-checker repository save them:

    models/safety_checker/config.json, model.safetensors (or pytorch_model.bin), preprocessor_config.json

or as a diffusers pipeline holds them: `safety_checker/` (config + weights) and
`feature_extractor/` (preprocessor_config.json) under that folder. Nothing is ever downloaded:
with the setting on and no checker there, `require()` raises an error naming the folder and files.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from PIL import Image

if TYPE_CHECKING:
    from modules.postprocess.services import Postprocessors

log = logging.getLogger(__name__)

MODEL_KIND = "safety_checker"  # the folder under models/
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
PIPELINE_SUBFOLDERS = ("safety_checker", "feature_extractor")  # a pipeline folder's layout


class SafetyCheckerUnavailableError(RuntimeError):
    """The NSFW filter is switched on but its checker is missing or cannot be loaded."""


@dataclass(frozen=True)
class CheckerFiles:
    model_dir: Path  # config.json + weights
    processor_dir: Path  # preprocessor_config.json


def find_files(folder: Path) -> Optional[CheckerFiles]:
    """The checker's folders inside `folder`, in either layout; None when incomplete."""
    def has_model(d: Path) -> bool:
        return (d / CONFIG).is_file() and any((d / w).is_file() for w in WEIGHTS)

    if has_model(folder) and (folder / PREPROCESSOR).is_file():
        return CheckerFiles(folder, folder)
    model_dir, processor_dir = (folder / sub for sub in PIPELINE_SUBFOLDERS)
    if has_model(model_dir) and (processor_dir / PREPROCESSOR).is_file():
        return CheckerFiles(model_dir, processor_dir)
    return None


def missing_message(folder: Path) -> str:
    return (f"The NSFW filter (setting filter_nsfw) is on, but no safety checker is installed in {folder}. "
            f"Put diffusers' StableDiffusionSafetyChecker there as the CompVis/stable-diffusion-safety-checker "
            f"repository holds it: {CONFIG}, {WEIGHTS[0]} (or {WEIGHTS[1]}) and {PREPROCESSOR} "
            f"(or a pipeline's {PIPELINE_SUBFOLDERS[0]}/ and {PIPELINE_SUBFOLDERS[1]}/ folders), "
            "or switch filter_nsfw off. Nothing is downloaded.")


class SafetyChecker:
    """Loads the checker on first use and keeps it; `flags` says which images it flags."""

    def __init__(self, postprocessors: "Postprocessors") -> None:
        self._post = postprocessors
        self._lock = threading.Lock()
        self._loaded: Optional[tuple[Any, Any]] = None  # (model, processor)
        self._loaded_key: Optional[tuple] = None  # files, sizes and times: a replaced file is loaded again

    @property
    def folder(self) -> Path:
        return Path(self._post.paths.model_dir(MODEL_KIND))

    def installed(self) -> bool:
        return find_files(self.folder) is not None

    def require(self) -> None:
        """Raise SafetyCheckerUnavailableError (naming the folder and files) unless installed."""
        if not self.installed():
            raise SafetyCheckerUnavailableError(missing_message(self.folder))

    def _load(self) -> tuple[Any, Any]:
        files = find_files(self.folder)
        if files is None:
            raise SafetyCheckerUnavailableError(missing_message(self.folder))
        key = _files_key(files)
        with self._lock:
            if self._loaded is None or self._loaded_key != key:
                self._loaded = None  # let the old model go first
                import torch
                from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
                from transformers import CLIPImageProcessor

                device = self._post.device
                dtype = torch.float16 if self._post.half and device.type == "cuda" else torch.float32
                try:
                    model = StableDiffusionSafetyChecker.from_pretrained(files.model_dir, local_files_only=True)
                    processor = CLIPImageProcessor.from_pretrained(files.processor_dir, local_files_only=True)
                except Exception as exc:  # a corrupt or foreign file: say which folder, never crash the app
                    raise SafetyCheckerUnavailableError(
                        f"The NSFW filter (setting filter_nsfw) is on, but the safety checker in {self.folder} "
                        f"cannot be loaded ({type(exc).__name__}: {exc}).") from exc
                self._loaded = (model.to(device=device, dtype=dtype).eval(), processor)
                self._loaded_key = key
                log.info("safety checker loaded from %s", files.model_dir)
            return self._loaded

    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """For each image, whether the checker flags it as NSFW."""
        if not images:
            return []
        import numpy as np
        import torch

        model, processor = self._load()
        param = next(model.parameters())
        pixels = processor(images=[img.convert("RGB") for img in images], return_tensors="pt").pixel_values
        placeholders = np.zeros((len(images), 1, 1, 3), dtype=np.float32)  # it blacks these, not ours
        with torch.inference_mode():
            _, flagged = model(clip_input=pixels.to(param.device, param.dtype), images=placeholders)
        return [bool(f) for f in flagged]


def _files_key(files: CheckerFiles) -> tuple:
    stats = []
    for path in sorted([*files.model_dir.iterdir(), *files.processor_dir.iterdir()]):
        if path.is_file():
            stat = path.stat()
            stats.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stats)


def black_like(image: Image.Image) -> Image.Image:
    """A black image of the same size (and mode) as `image`."""
    return Image.new(image.mode, image.size)


__all__ = ["SafetyChecker", "SafetyCheckerUnavailableError", "find_files", "missing_message", "black_like"]
