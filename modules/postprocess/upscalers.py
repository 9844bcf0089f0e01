"""The upscalers: A1111's built-ins ("None", "Lanczos", "Nearest") and every model file spandrel
recognises in the upscaler folders (upscaler_files), under A1111's names.

    registry = postprocessors.upscalers
    registry.names()                       # ["None", "Lanczos", "Nearest", "R-ESRGAN 4x+", ...]
    registry.require(name, "hr_upscaler")  # UnknownUpscalerError (API: 422 naming the field)
    registry.upscale(image, 2.0, name)     # round(w*2) x round(h*2)
    registry.upscale_to(image, w, h, name) # exactly w x h

The folders are the source of truth: every listing stats them (cheap) and reads only new or
changed files, so a file dropped in appears without a restart; `refresh()` reads them all again.
A model runs as A1111 runs it: passes of the model until the image is at least the target size
(at most three), then Lanczos to the exact size. Large images go through in tiles
(tiled_inference) sized by the folder's settings (ESRGAN_tile / _overlap, DAT_tile, ...). Models
run in fp16 on CUDA when their architecture allows it and the app is not --no-half. The last few
models used stay loaded (`MODEL_CACHE_SIZE`). Everything here is safe to call from several threads;
model passes run one at a time (they would compete for the same device anyway).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from PIL import Image

from modules.models.errors import CheckpointError
from modules.postprocess.upscaler_files import (
    REALESRGAN_RELEASES,
    FileStamp,
    KnownRelease,
    ModelFile,
    UnusableModel,
    load_descriptor,
    model_files,
    probe,
)

if TYPE_CHECKING:
    from modules.postprocess.services import Postprocessors
    from modules.postprocess.tiled_inference import TileProgress

log = logging.getLogger(__name__)

NONE, LANCZOS, NEAREST = "None", "Lanczos", "Nearest"
BUILTIN_NAMES = (NONE, LANCZOS, NEAREST)  # A1111's, first in every list
MAX_MODEL_PASSES = 3  # A1111 runs a model at most three times to reach the target size
MODEL_CACHE_SIZE = 2  # loaded models kept (hires fix and Extras' second upscaler each use one)
# Plain convolutional architectures give the same pixels wherever a tile starts (up to their
# pixel-unshuffle factor); others (window attention) get tiles on a 32-pixel grid, a multiple of
# the released windows (SwinIR 8, HAT 16, DAT 8x32).
CONVOLUTIONAL_ARCHS = frozenset({"ESRGAN", "RealESRGAN Compact"})
ATTENTION_TILE_ALIGN = 32


class UnknownUpscalerError(ValueError):
    """A name that is not a usable upscaler; `field` is the request field that carried it."""

    def __init__(self, field: Union[str, Sequence[Any]], name: str, valid_names: Sequence[str], hint: str = "") -> None:
        self.field = field
        self.name = name
        self.valid_names = list(valid_names)
        self.hint = hint
        where = field if isinstance(field, str) else ".".join(str(p) for p in field)
        message = f"{where}: unknown upscaler {name!r}."
        if hint:
            message += f" {hint}"
        message += f" Available upscalers: {', '.join(self.valid_names)}"
        super().__init__(message)


@dataclass(frozen=True)
class UpscalerInfo:
    """One line of /sdapi/v1/upscalers (A1111's fields)."""

    name: str
    model_name: Optional[str]  # the model's architecture (spandrel's name); None for built-ins
    model_path: Optional[str]
    model_url: Optional[str]  # always None: nothing is downloaded
    scale: Optional[float]  # the model's own factor; None for built-ins (any factor)


@dataclass(frozen=True)
class ReleaseStatus:
    """A known Real-ESRGAN release and whether it is installed (/sdapi/v1/realesrgan-models)."""

    name: str
    path: str  # A1111's field: where the release is published (fetch it by hand; never downloaded here)
    scale: int
    local_path: str  # where the file is, or where to put it
    installed: bool
    reason: Optional[str] = None  # why a file that is there cannot be used


class _ModelCache:
    """The last few loaded models (spandrel descriptors on the device), least recently used out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: ModelFile, device, half: bool):
        key = (model.path, _mtime(model.path), str(device), half)
        with self._lock:  # held while loading, so two callers never load the same file twice
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            descriptor = load_descriptor(model.path).to(device)
            if half:
                descriptor = descriptor.half()
            self._items[key] = descriptor
            while len(self._items) > self.size:
                self._items.popitem(last=False)
                _free_device_memory(device)
            return descriptor

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _free_device_memory(device) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()


class UpscalerRegistry:
    def __init__(self, postprocessors: "Postprocessors", cache_size: int = MODEL_CACHE_SIZE) -> None:
        self._pp = postprocessors
        self._lock = threading.RLock()  # guards the listing below
        self._probed: dict[tuple, Union[ModelFile, UnusableModel]] = {}  # _key(stamp) -> result
        self._models: dict[str, ModelFile] = {}
        self._unusable: list[UnusableModel] = []
        self._cache = _ModelCache(cache_size)
        self._run_lock = threading.Lock()

    # ------------------------------------------------------------------ listing
    def refresh(self) -> None:
        """Read every file again (a file replaced in place with the same size and time included)."""
        with self._lock:
            self._probed.clear()
            self._cache.clear()
            self._sync()

    def names(self) -> list[str]:
        """Usable names in A1111's order: the built-ins, then the models by name."""
        return [*BUILTIN_NAMES, *self._sorted_models().keys()]

    def items(self) -> list[UpscalerInfo]:
        builtins = [UpscalerInfo(name, None, None, None, None) for name in BUILTIN_NAMES]
        return builtins + [UpscalerInfo(m.name, m.architecture, str(m.path), None, float(m.scale))
                           for m in self._sorted_models().values()]

    def unusable(self) -> list[UnusableModel]:
        with self._lock:
            self._sync()
            return list(self._unusable)

    def models(self) -> list[ModelFile]:
        return list(self._sorted_models().values())

    def realesrgan_models(self) -> list[ReleaseStatus]:
        """The six Real-ESRGAN releases A1111 offers, in its order, and whether each is installed."""
        with self._lock:
            self._sync()
            by_path = {m.path.resolve(): m for m in self._models.values()}
            broken = {u.path.resolve(): u.reason for u in self._unusable}
        out = []
        for release in REALESRGAN_RELEASES:
            expected = release.expected_path(self._pp.paths)
            model = by_path.get(expected.resolve()) or self._release_model(release)
            out.append(ReleaseStatus(name=release.name, path=release.url, scale=release.scale,
                                     local_path=str(model.path if model else expected), installed=model is not None,
                                     reason=None if model else broken.get(expected.resolve())))
        return out

    def _release_model(self, release: KnownRelease) -> Optional[ModelFile]:
        """The file named after `release` in its folder under another file name (a .safetensors
        conversion, a subfolder)."""
        model = self._models.get(release.name)
        return model if model is not None and model.kind == release.kind else None

    def require(self, name: str, field: Union[str, Sequence[Any]]) -> None:
        """Nothing when `name` is a usable upscaler, else UnknownUpscalerError naming `field`."""
        self._find(name, field)

    def _sorted_models(self) -> dict[str, ModelFile]:
        with self._lock:
            self._sync()
            return dict(sorted(self._models.items(), key=lambda kv: kv[0].lower()))

    def _find(self, name: str, field: Union[str, Sequence[Any]]) -> Optional[ModelFile]:
        """The model for `name`; None for a built-in; UnknownUpscalerError otherwise."""
        if name in BUILTIN_NAMES:
            return None
        with self._lock:
            self._sync()
            model = self._models.get(name)
            if model is not None:
                return model
            hint = self._missing_hint(name)
        raise UnknownUpscalerError(field, name, self.names(), hint)

    def _missing_hint(self, name: str) -> str:
        from modules.postprocess.upscaler_files import KNOWN_RELEASES

        for release in KNOWN_RELEASES:
            if release.name == name:
                where = release.expected_path(self._pp.paths)
                reason = next((u.reason for u in self._unusable if u.path.resolve() == where.resolve()), None)
                if reason:
                    return f"Its file {where} cannot be used: {reason}."
                return (f"It is not installed: put {release.filename} in {where.parent} "
                        f"(published at {release.url}); nothing is downloaded.")
        return ""

    def _sync(self) -> None:
        """Bring the listing in line with the folders; reads only new or changed files."""
        stamps = model_files(self._pp.paths)
        probed: dict[tuple, Union[ModelFile, UnusableModel]] = {}
        for stamp in stamps:
            key = _key(stamp)
            result = self._probed.get(key)
            if result is None:
                result = probe(stamp.path, stamp.kind)
                if isinstance(result, UnusableModel):
                    log.warning("upscaler file %s is not usable: %s", result.path, result.reason)
            probed[key] = result
        self._probed = probed
        models: dict[str, ModelFile] = {}
        unusable: list[UnusableModel] = []
        for result in probed.values():
            if isinstance(result, UnusableModel):
                unusable.append(result)
            elif result.name in BUILTIN_NAMES or _is_latent_mode(result.name):
                unusable.append(UnusableModel(result.path, f"its name {result.name!r} is a built-in upscaler's; "
                                                           "rename the file"))
            elif result.name in models:
                unusable.append(UnusableModel(result.path, f"another file already has the name {result.name!r} "
                                                           f"({models[result.name].path}); rename one of them"))
            else:
                models[result.name] = result
        self._models, self._unusable = models, unusable

    # ------------------------------------------------------------------ upscaling
    def upscale(self, image: Image.Image, scale: float, name: str,
                progress: Optional[TileProgress] = None) -> Image.Image:
        """`image` scaled by `scale` with the named upscaler: round(w*scale) x round(h*scale)."""
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        return self.upscale_to(image, width, height, name, progress)

    def upscale_to(self, image: Image.Image, width: int, height: int, name: str,
                   progress: Optional[TileProgress] = None) -> Image.Image:
        """`image` at exactly width x height. "None" only resizes (Lanczos); a model runs until
        the image is at least that big, then Lanczos brings it to the exact size.
        `progress(done, total)` is called after each tile of each model pass; it may raise to stop."""
        if width < 1 or height < 1:
            raise ValueError(f"target size must be at least 1x1, got {width}x{height}")
        model = self._find(name, "upscaler")
        if model is None:
            method = Image.Resampling.NEAREST if name == NEAREST else Image.Resampling.LANCZOS
            return image.resize((width, height), resample=method)
        return self._upscale_with_model(image, width, height, model, progress)

    def _upscale_with_model(self, image: Image.Image, width: int, height: int, model: ModelFile,
                            progress: Optional[TileProgress]) -> Image.Image:
        alpha = _alpha_channel(image)
        current = image.convert("RGB")
        for _ in range(MAX_MODEL_PASSES):
            before = current.size
            current = self._model_pass(current, model, progress)
            if current.size == before or (current.width >= width and current.height >= height):
                break
        if current.size != (width, height):
            current = current.resize((width, height), resample=Image.Resampling.LANCZOS)
        if alpha is not None:  # the model sees colour only; transparency is resized alongside
            current = current.convert("RGBA")
            current.putalpha(alpha.resize((width, height), resample=Image.Resampling.LANCZOS))
        return current

    def _model_pass(self, image: Image.Image, model: ModelFile, progress: Optional[TileProgress]) -> Image.Image:
        import torch

        from modules.postprocess.tiled_inference import run_tiled

        device = self._pp.device
        half = bool(self._pp.half and device.type == "cuda" and model.supports_half)
        options = self._pp.settings.get()
        tile = 0 if model.tiling == "INTERNAL" else int(getattr(options, model.tile_setting, 0))
        overlap = int(getattr(options, f"{model.tile_setting}_overlap", 0))
        with self._run_lock:
            try:
                descriptor = self._cache.get(model, device, half)
            except CheckpointError:
                with self._lock:
                    self._probed.clear()  # the file changed under us: list it as it is now
                raise
            tensor = _to_tensor(image).to(device=device, dtype=torch.float16 if half else torch.float32)
            align = descriptor.size_requirements.multiple_of if model.architecture in CONVOLUTIONAL_ARCHS \
                else ATTENTION_TILE_ALIGN
            output = run_tiled(descriptor, tensor, descriptor.scale, tile, overlap, progress, align=align)
            result = _to_image(output)
            del tensor, output
        return result


def _key(stamp: FileStamp) -> tuple:
    return (stamp.path, stamp.kind, stamp.size, stamp.mtime_ns)


def _is_latent_mode(name: str) -> bool:
    from modules.processing.latent_upscale import is_latent_mode

    return is_latent_mode(name)


def _alpha_channel(image: Image.Image) -> Optional[Image.Image]:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return None


def _to_tensor(image: Image.Image):
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.uint8)  # H x W x 3
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def _to_image(tensor) -> Image.Image:
    array = tensor[0].float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


__all__ = [
    "BUILTIN_NAMES", "MODEL_CACHE_SIZE", "ReleaseStatus", "UnknownUpscalerError", "UnusableModel",
    "UpscalerInfo", "UpscalerRegistry",
]
