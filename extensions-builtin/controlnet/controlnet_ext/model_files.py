"""ControlNet model files on disk: where they are found and the names clients know them by.

Files are `.pth`, `.pt`, `.ckpt`, `.safetensors` and `.bin` anywhere under the folders
(models/ControlNet of the data folder, --controlnet-dir, and the repo's read-only
models/embedded/ControlNet), plus diffusers folders (a `config.json` beside the weights). Each is
listed as sd-webui-controlnet lists it: `name [hash]`, name = the file's stem (a folder's name), hash
= A1111's legacy 8-hex `sd_models.model_hash` (sha256 of the 64 KiB at offset 1 MiB; a file smaller
than 1 MiB hashes the empty string). A title found in an earlier folder wins a clash. A file named
`None` is never listed (it is the "no model" choice). Torch-free.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from modules.paths import REPO_ROOT

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")
EMBEDDED_CONTROLNET_DIR = REPO_ROOT / "models" / "embedded" / "ControlNet"
NONE_MODEL = "None"
# weights of a diffusers folder, first found is the one hashed and loaded
FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                  "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
_LEGACY_OFFSET, _LEGACY_LENGTH = 0x100000, 0x10000
_TITLE = re.compile(r"^(.*) \[[0-9a-fA-F]{8}\]$")


def legacy_model_hash(path: Path) -> str:
    """A1111's old short model hash, which sd-webui-controlnet puts in its model names."""
    with open(path, "rb") as f:
        f.seek(_LEGACY_OFFSET)
        return hashlib.sha256(f.read(_LEGACY_LENGTH)).hexdigest()[:8]


def folder_weights(folder: Path) -> Optional[Path]:
    """The weights file of a diffusers model folder, or None if `folder` is not one."""
    if not (folder / "config.json").is_file():
        return None
    return next((folder / n for n in FOLDER_WEIGHTS if (folder / n).is_file()), None)


@dataclass(frozen=True)
class ControlModelFile:
    name: str  # file stem, or the folder name of a diffusers folder
    path: Path  # the file, or the diffusers folder
    short_hash: str  # legacy 8-hex hash of the weights file

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]"

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    @property
    def weights_path(self) -> Path:
        """The file that holds the weights (the folder's weights file for a diffusers folder)."""
        return (folder_weights(self.path) or self.path) if self.path.is_dir() else self.path


@dataclass(frozen=True)
class _Stat:
    size: int
    mtime_ns: int


def _scan(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, path, weights file) of every model under `folder`; diffusers folders are not entered."""
    found: list[tuple[str, Path, Path]] = []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            weights = folder_weights(entry)
            if weights is not None:
                found.append((entry.name, entry, weights))
            else:
                found.extend(_scan(entry))
        elif entry.is_file() and entry.suffix.lower() in SUFFIXES:
            found.append((entry.stem, entry, entry))
    return found


class ControlModelLibrary:
    """The control models of some folders, scanned on `refresh`; hashes kept while a file is unchanged."""

    def __init__(self, folders: Iterable[Path]) -> None:
        folders = [Path(f) for f in folders]
        if EMBEDDED_CONTROLNET_DIR not in folders:
            folders.append(EMBEDDED_CONTROLNET_DIR)
        self.folders = folders
        self._files: list[ControlModelFile] = []
        self._hashes: dict[tuple[Path, _Stat], str] = {}
        self._lock = threading.Lock()  # the UI's refresh and the worker's lookups may overlap
        self._scanned = False

    def _hash(self, weights: Path) -> str:
        st = weights.stat()
        key = (weights, _Stat(st.st_size, st.st_mtime_ns))
        with self._lock:
            cached = self._hashes.get(key)
        if cached is None:
            cached = legacy_model_hash(weights)
            with self._lock:
                self._hashes[key] = cached
        return cached

    def refresh(self) -> None:
        by_title: dict[str, ControlModelFile] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for name, path, weights in _scan(folder):
                if name == NONE_MODEL:
                    continue
                try:
                    item = ControlModelFile(name=name, path=path, short_hash=self._hash(weights))
                except OSError:
                    continue  # vanished or unreadable while scanning: not listed
                by_title.setdefault(item.title, item)
        files = sorted(by_title.values(), key=lambda f: (f.name.lower(), f.name, str(f.path)))
        with self._lock:
            self._files, self._scanned = files, True

    @property
    def files(self) -> list[ControlModelFile]:
        if not self._scanned:
            self.refresh()
        with self._lock:
            return list(self._files)

    @property
    def titles(self) -> list[str]:
        return [f.title for f in self.files]

    def _match(self, name: str) -> Optional[ControlModelFile]:
        """sd-webui-controlnet's matching: the exact title, then the name (any case), then the
        shortest name that contains the text."""
        files = self.files
        for f in files:
            if f.title == name:
                return f
        key = name.lower()
        for f in files:
            if f.name.lower() == key:
                return f
        containing = sorted((f for f in files if key in f.name.lower()), key=lambda f: len(f.name))
        return containing[0] if containing else None

    def find(self, name: str) -> Optional[ControlModelFile]:
        """The file a unit's `model` names; None for "None"/empty or no match. A file added or
        changed since the last scan is found after a re-scan. A title whose hash no longer matches
        (the file was replaced) falls back to its bare name."""
        name = (name or "").strip()
        if not name or name == NONE_MODEL:
            return None
        found = self._match(name)
        if found is None or not found.path.exists():
            self.refresh()
            found = self._match(name)
        if found is None and (m := _TITLE.match(name)):
            found = self._match(m.group(1))
        return found


__all__ = ["ControlModelFile", "ControlModelLibrary", "EMBEDDED_CONTROLNET_DIR", "SUFFIXES", "NONE_MODEL",
           "legacy_model_hash", "folder_weights", "FOLDER_WEIGHTS"]
