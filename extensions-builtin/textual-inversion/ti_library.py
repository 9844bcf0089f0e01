"""The embedding folders, scanned: which files are there, read once per version of each file.

A scan walks the folders (recursively, links followed) and re-reads only files whose size or
modification time changed, so a scan before every job costs a few `stat` calls. `refresh` forgets
everything read and reads again. Which embeddings a model can use (`for_model`) is decided by the
widths of its text encoders: the others are "skipped", as A1111 lists them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ti_files import EMBEDDING_SUFFIXES, EmbeddingFile, EmbeddingFileError, read_embedding

log = logging.getLogger(__name__)

PREVIEW_SUFFIXES = (".png", ".preview.png", ".jpg", ".jpeg", ".webp", ".preview.jpg", ".preview.webp")


@dataclass(frozen=True)
class LibraryView:
    """One scan's result: embeddings by name (first found wins), and files that could not be read."""

    files: dict[str, EmbeddingFile] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # path -> why

    def split(self, widths: tuple[int, ...]) -> tuple[dict[str, EmbeddingFile], dict[str, EmbeddingFile]]:
        """(loaded, skipped) for a model whose text encoders have these widths; () = not known yet,
        every embedding counts as loaded (A1111 before a model is loaded)."""
        if not widths:
            return dict(self.files), {}
        loaded = {n: f for n, f in self.files.items() if f.fits(widths)}
        return loaded, {n: f for n, f in self.files.items() if n not in loaded}


class EmbeddingLibrary:
    def __init__(self, folders: Iterable[Path]) -> None:
        self.folders = list(dict.fromkeys(Path(f).resolve() for f in folders))
        self._lock = threading.Lock()  # the job worker and API requests scan the same library
        self._read: dict[Path, tuple[tuple[int, int], EmbeddingFile | str]] = {}  # path -> (size, mtime), result
        self._view = LibraryView()

    def scan(self) -> LibraryView:
        with self._lock:
            files: dict[str, EmbeddingFile] = {}
            errors: dict[str, str] = {}
            seen: dict[Path, tuple[tuple[int, int], EmbeddingFile | str]] = {}
            for path in self._embedding_paths():
                try:
                    st = path.stat()
                except OSError:
                    continue
                if st.st_size == 0:
                    continue
                version = (st.st_size, st.st_mtime_ns)
                cached = self._read.get(path)
                result = cached[1] if cached is not None and cached[0] == version else self._read_one(path)
                seen[path] = (version, result)
                if isinstance(result, str):
                    errors[str(path)] = result
                elif result.name in files:
                    log.warning("textual inversion: %s ignored: %s has the same name", path, files[result.name].path)
                else:
                    files[result.name] = result
            self._read = seen
            self._view = LibraryView(files=dict(sorted(files.items(), key=lambda kv: kv[0].lower())), errors=errors)
            return self._view

    def refresh(self) -> LibraryView:
        """Forget what was read and read every file again."""
        with self._lock:
            self._read.clear()
        return self.scan()

    def _embedding_paths(self) -> list[Path]:
        found: list[Path] = []
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for root, dirs, names in os.walk(folder, followlinks=True):
                dirs.sort()
                found += [Path(root) / n for n in sorted(names) if n.lower().endswith(EMBEDDING_SUFFIXES)]
        return found

    @staticmethod
    def _read_one(path: Path) -> EmbeddingFile | str:
        try:
            return read_embedding(path)
        except (EmbeddingFileError, OSError) as exc:
            log.warning("textual inversion: %s", exc)
            return str(exc)


def preview_of(path: Path) -> str:
    """An image beside the embedding (``name.png``, ``name.preview.png``, ...), "" if none."""
    for suffix in PREVIEW_SUFFIXES:
        candidate = path.with_name(path.stem + suffix)
        if candidate.is_file():
            return str(candidate)
    return ""


def hypernetwork_files(folder: Path) -> list[Path]:
    """Hypernetwork files (``.pt``, ``.safetensors``) under `folder`, recursively."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in (".pt", ".safetensors") and p.is_file()),
                  key=lambda p: str(p).lower())
