"""LoRA files on disk: where they are found, their names, metadata, previews and A1111's hash.

Files are `.safetensors`, `.pt` and `.ckpt` anywhere under the folders (models/Lora of the data
folder, --lora-dir, and the repo's models/embedded/Lora, which is read-only). A tag names a file by
its stem (`<lora:name:1>`), by its path below its folder without the suffix, or by its alias (the
`ss_output_name` of its metadata), as A1111 resolves them. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from modules.models.file_check import CheckpointError, read_safetensors_header

SUFFIXES = (".safetensors", ".pt", ".ckpt")
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SHORT_HASH_LEN = 12  # A1111's LoRA short hash (checkpoints use 10)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileIdentity:
    """A file as it is now: a changed file (size or mtime) is read and hashed again."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "FileIdentity":
        st = path.stat()
        return cls(str(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class LoraFile:
    name: str  # the file's stem: what <lora:name:1> says
    path: Path
    relative: str  # path below its folder, without suffix, "/"-separated
    alias: str  # metadata ss_output_name, else the name
    metadata: dict[str, Any] = field(default_factory=dict)
    preview: str = ""

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix.lower() == ".safetensors"


def read_metadata(path: Path) -> dict[str, Any]:
    """The safetensors header's `__metadata__`; values that hold JSON objects are decoded (A1111
    does the same). Other formats, and unreadable headers, have none (reading them fails later,
    with a warning that names the file)."""
    if path.suffix.lower() != ".safetensors":
        return {}
    try:
        header, _ = read_safetensors_header(path)
    except (CheckpointError, OSError):
        return {}
    out: dict[str, Any] = {}
    for key, value in dict(header.get("__metadata__") or {}).items():
        out[key] = value
        if isinstance(value, str) and value.startswith("{"):
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass
    return out


def find_preview(path: Path) -> str:
    """`name.png` or `name.preview.png` (or .jpg/.jpeg/.webp) beside the file; "" if none."""
    stem = path.with_suffix("")
    for base in (stem, stem.with_name(stem.name + ".preview")):
        for suffix in PREVIEW_SUFFIXES:
            candidate = base.with_name(base.name + suffix)
            if candidate.is_file():
                return str(candidate)
    return ""


def addnet_hash(path: Path) -> str:
    """A1111's LoRA hash: for safetensors the sha256 of the tensor data after the header (the
    `addnet` hash, unchanged by metadata edits), for other files the sha256 of the whole file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if path.suffix.lower() == ".safetensors":
            n = int.from_bytes(f.read(8), "little")
            f.seek(8 + n)
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LoraLibrary:
    """The LoRA files of some folders, scanned on `refresh`; hashes computed when first needed."""

    def __init__(self, folders: Iterable[Path] = ()) -> None:
        self.folders = [Path(f) for f in folders]
        self._files: dict[str, LoraFile] = {}  # by name; the first folder's file wins a clash
        self._lookup: dict[str, LoraFile] = {}  # name, relative path and alias (lowercase) -> file
        self._hashes: dict[FileIdentity, str] = {}
        self._lock = threading.Lock()  # the UI's refresh and the worker's jobs may overlap

    def refresh(self) -> None:
        files: dict[str, LoraFile] = {}
        lookup: dict[str, LoraFile] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
                relative = path.relative_to(folder).with_suffix("").as_posix()
                metadata = read_metadata(path)
                alias = str(metadata.get("ss_output_name") or path.stem)
                item = LoraFile(name=path.stem, path=path, relative=relative, alias=alias, metadata=metadata,
                                preview=find_preview(path))
                files.setdefault(item.name, item)
                for key in (item.name, item.relative, item.alias):
                    lookup.setdefault(key.lower(), item)
        with self._lock:
            self._files, self._lookup = files, lookup

    @property
    def files(self) -> list[LoraFile]:
        with self._lock:
            return list(self._files.values())

    def find(self, name: str) -> Optional[LoraFile]:
        """A tag's name -> its file; a file added since the last scan is found after a re-scan."""
        key = name.strip().lower()
        with self._lock:
            found = self._lookup.get(key)
        if found is None or not found.path.is_file():
            self.refresh()
            with self._lock:
                found = self._lookup.get(key)
        return found

    def short_hash(self, item: LoraFile) -> str:
        identity = FileIdentity.of(item.path)
        with self._lock:
            cached = self._hashes.get(identity)
        if cached is None:
            cached = addnet_hash(item.path)
            with self._lock:
                self._hashes[identity] = cached
        return cached[:SHORT_HASH_LEN]


__all__ = ["LoraFile", "LoraLibrary", "FileIdentity", "SUFFIXES", "read_metadata", "find_preview", "addnet_hash",
           "SHORT_HASH_LEN"]
