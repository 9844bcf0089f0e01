"""Upscaler model files on disk: where they live, what A1111 calls them, and what spandrel makes of them.

Five folders are scanned (A1111's, each with its flag: --esrgan-models-path, ...): models/ESRGAN,
RealESRGAN, SwinIR, ScuNET and DAT. Any file spandrel (plus spandrel_extra_arches) recognises as
an image-to-image model with 3 colour channels in and out (purpose "SR" or "Restoration") is an
upscaler, whatever folder it is in; the folder only chooses the tile settings.

Files are read safely: safetensors, or a pickle whose globals are checked before
`torch.load(weights_only=True)` (modules/models/checkpoint_io). A file that cannot be read or is
not an upscaler becomes an `UnusableModel` with the reason; nothing here raises past `probe`.
Nothing is ever downloaded: a known release that is missing is only described (`KnownRelease`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from modules.models.errors import CheckpointError
from modules.paths import Paths

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".pth", ".pt", ".safetensors")  # what A1111's upscalers scan for


@dataclass(frozen=True)
class UpscalerFolder:
    kind: str  # Paths.model_dir kind (and A1111's folder name)
    tile_setting: str  # Options field with the tile size; "<it>_overlap" holds the overlap


# In A1111's order. Real-ESRGAN files run with the ESRGAN tile settings, as in A1111.
UPSCALER_FOLDERS: tuple[UpscalerFolder, ...] = (
    UpscalerFolder("ESRGAN", "ESRGAN_tile"),
    UpscalerFolder("RealESRGAN", "ESRGAN_tile"),
    UpscalerFolder("SwinIR", "SWIN_tile"),
    UpscalerFolder("ScuNET", "SCUNET_tile"),
    UpscalerFolder("DAT", "DAT_tile"),
)
_FOLDER_BY_KIND = {f.kind: f for f in UPSCALER_FOLDERS}


@dataclass(frozen=True)
class KnownRelease:
    """A published model A1111 offers by name. Here it is listed only when its file is present."""

    name: str  # A1111's name, e.g. "R-ESRGAN 4x+"
    filename: str
    scale: int
    kind: str  # the folder it belongs in
    url: str  # where A1111 downloads it from; shown so a person can fetch it by hand

    def expected_path(self, paths: Paths) -> Path:
        return paths.model_dir(self.kind) / self.filename


_RESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_DAT = "https://huggingface.co/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT"
# A1111's modules/realesrgan_model.py, in its order.
REALESRGAN_RELEASES: tuple[KnownRelease, ...] = (
    KnownRelease("R-ESRGAN General 4xV3", "realesr-general-x4v3.pth", 4, "RealESRGAN",
                 f"{_RESRGAN}/v0.2.5.0/realesr-general-x4v3.pth"),
    KnownRelease("R-ESRGAN General WDN 4xV3", "realesr-general-wdn-x4v3.pth", 4, "RealESRGAN",
                 f"{_RESRGAN}/v0.2.5.0/realesr-general-wdn-x4v3.pth"),
    KnownRelease("R-ESRGAN AnimeVideo", "realesr-animevideov3.pth", 4, "RealESRGAN",
                 f"{_RESRGAN}/v0.2.5.0/realesr-animevideov3.pth"),
    KnownRelease("R-ESRGAN 4x+", "RealESRGAN_x4plus.pth", 4, "RealESRGAN",
                 f"{_RESRGAN}/v0.1.0/RealESRGAN_x4plus.pth"),
    KnownRelease("R-ESRGAN 4x+ Anime6B", "RealESRGAN_x4plus_anime_6B.pth", 4, "RealESRGAN",
                 f"{_RESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth"),
    KnownRelease("R-ESRGAN 2x+", "RealESRGAN_x2plus.pth", 2, "RealESRGAN",
                 f"{_RESRGAN}/v0.2.1/RealESRGAN_x2plus.pth"),
)
# A1111's modules/dat_model.py
DAT_RELEASES: tuple[KnownRelease, ...] = (
    KnownRelease("DAT x2", "DAT_x2.pth", 2, "DAT", f"{_DAT}/DAT_x2.pth"),
    KnownRelease("DAT x3", "DAT_x3.pth", 3, "DAT", f"{_DAT}/DAT_x3.pth"),
    KnownRelease("DAT x4", "DAT_x4.pth", 4, "DAT", f"{_DAT}/DAT_x4.pth"),
)
KNOWN_RELEASES = REALESRGAN_RELEASES + DAT_RELEASES


def display_name(path: Path, kind: str) -> str:
    """A1111's name for a file: the release's name for a known release in its own folder (A1111
    names only those; a .safetensors conversion of it too), else the file's stem."""
    for release in KNOWN_RELEASES:
        if release.kind == kind and path.stem.lower() == Path(release.filename).stem.lower():
            return release.name
    return path.stem


@dataclass(frozen=True)
class ModelFile:
    """A file spandrel loads as an upscaler."""

    name: str
    path: Path
    kind: str  # the folder it was found in
    architecture: str  # spandrel's architecture name, e.g. "ESRGAN", "RealESRGAN Compact", "DAT"
    scale: int
    supports_half: bool
    tiling: str  # spandrel's ModelTiling name: SUPPORTED, DISCOURAGED, INTERNAL

    @property
    def tile_setting(self) -> str:
        return _FOLDER_BY_KIND[self.kind].tile_setting


@dataclass(frozen=True)
class UnusableModel:
    """A file in an upscaler folder that cannot be used, and why (shown in the API and the log)."""

    path: Path
    reason: str


# ---------------------------------------------------------------------------------------------
# reading files


def spandrel_registry():
    """spandrel's registry with spandrel_extra_arches' architectures added (idempotent)."""
    import spandrel
    import spandrel_extra_arches

    spandrel_extra_arches.install(ignore_duplicates=True)
    return spandrel.MAIN_REGISTRY


def read_state_dict(path: Path) -> dict[str, Any]:
    """The file's top-level object (a dict, possibly holding `params_ema` / `params`), on the CPU.
    CheckpointError (naming the file) for anything unreadable or unsafe."""
    from modules.models.checkpoint_io import _torch_load_weights_only  # the one safe-pickle gate
    from modules.models.file_check import check_pickle_file, read_safetensors_header

    if not path.is_file():
        raise CheckpointError(path, "the file does not exist")
    if path.suffix.lower() == ".safetensors":
        read_safetensors_header(path)  # empty, corrupt and truncated files get a clear reason
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(path, f"safetensors could not read it ({exc})") from None
    check_pickle_file(path)  # refuse code before torch sees the pickle
    obj = _torch_load_weights_only(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"the file holds a {type(obj).__name__}, not a dictionary of tensors")
    return obj


def load_descriptor(path: Path):
    """spandrel's ImageModelDescriptor for an upscaler file (on the CPU, in eval mode).
    CheckpointError with the reason when the file is not a usable upscaler."""
    import spandrel

    raw = read_state_dict(path)
    state = spandrel.canonicalize_state_dict(raw)  # params_ema / params / module. prefixes
    try:
        descriptor = spandrel_registry().load(state)
    except spandrel.UnsupportedModelError:
        raise CheckpointError(path, "spandrel does not recognise its architecture") from None
    except Exception as exc:  # an arch matched by key names whose shapes do not fit it
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointError(path, f"its weights do not fit the architecture their names suggest ({first})") from None
    why_not = _not_an_upscaler(descriptor)
    if why_not:
        raise CheckpointError(path, why_not)
    return descriptor.eval()


def _not_an_upscaler(descriptor) -> Optional[str]:
    import spandrel

    arch = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        return f"it is a {arch} model for {descriptor.purpose.lower()}, not an upscaler"
    if descriptor.purpose not in ("SR", "Restoration"):
        what = "face restoration (use it from models/GFPGAN or models/Codeformer)" if descriptor.purpose == "FaceSR" \
            else descriptor.purpose
        return f"it is a {arch} model for {what}, not an upscaler"
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        return (f"it is a {arch} model with {descriptor.input_channels} input and {descriptor.output_channels} "
                "output channels; only colour (RGB to RGB) models are supported")
    return None


def probe(path: Path, kind: str) -> Union[ModelFile, UnusableModel]:
    """Load the file once to learn its architecture and scale; never raises."""
    try:
        descriptor = load_descriptor(path)
    except CheckpointError as exc:
        return UnusableModel(path, exc.reason)
    except Exception as exc:  # a listing must survive any file
        log.warning("could not read upscaler file %s", path, exc_info=True)
        return UnusableModel(path, f"{type(exc).__name__}: {exc}")
    return ModelFile(name=display_name(path, kind), path=path, kind=kind,
                     architecture=descriptor.architecture.name, scale=int(descriptor.scale),
                     supports_half=bool(descriptor.supports_half), tiling=descriptor.tiling.name)


# ---------------------------------------------------------------------------------------------
# scanning folders


@dataclass(frozen=True)
class FileStamp:
    path: Path
    kind: str
    size: int
    mtime_ns: int


def model_files(paths: Paths) -> list[FileStamp]:
    """Every candidate file in the upscaler folders (subfolders too), in A1111's folder order.
    A folder given twice (two flags naming one directory) is scanned once."""
    out: list[FileStamp] = []
    seen: set[Path] = set()
    for folder in UPSCALER_FOLDERS:
        root = paths.model_dir(folder.kind)
        for path in _walk(root):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            try:
                st = path.stat()
            except OSError:
                continue
            out.append(FileStamp(path, folder.kind, st.st_size, st.st_mtime_ns))
    return out


def _walk(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        return []
    found = []
    visited: set[str] = set()  # linked folders are followed, but a link loop is walked once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        visited.add(os.path.realpath(dirpath))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in visited)
        found += [Path(dirpath) / n for n in sorted(filenames)
                  if n.lower().endswith(MODEL_SUFFIXES) and not n.startswith(".")]
    return found


__all__ = [
    "DAT_RELEASES", "FileStamp", "KNOWN_RELEASES", "KnownRelease", "MODEL_SUFFIXES", "ModelFile",
    "REALESRGAN_RELEASES", "UPSCALER_FOLDERS", "UnusableModel", "UpscalerFolder", "display_name",
    "load_descriptor", "model_files", "probe", "read_state_dict", "spandrel_registry",
]
