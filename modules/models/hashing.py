"""Model file hashes, A1111 style: sha256 of the whole file, short hash = its first 10 hex digits.

Hashing a 7 GB checkpoint takes a while, so hashes are computed only when asked for and cached on
disk in `Paths.cache_file` (JSON), keyed by the file's absolute path and checked against its size
and mtime: a file that changed is hashed again. The cache file is shared with other parts of the
app (each owns a top-level section); writes merge with what is on disk and are atomic
(temp file + rename), so a crash never leaves half a JSON file. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Optional

from ..atomic_write import write_json_atomic

SHORT_HASH_LEN = 10
CHUNK = 1 << 20
SECTION = "hashes"

# Files of a diffusers folder that take part in its hash (weights and configs; not READMEs).
_FOLDER_HASH_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")


def short_hash(sha256: Optional[str]) -> Optional[str]:
    return sha256[:SHORT_HASH_LEN] if sha256 else None


def sha256_file(path: Path, progress: Optional[Callable[[int], None]] = None) -> str:
    """sha256 of the file's bytes, read in 1 MiB chunks (what `sha256sum` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """The files of a diffusers folder that define it, in a stable order."""
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in _FOLDER_HASH_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _stat_key(path: Path) -> tuple[int, float]:
    """(size, mtime) of a file; for a folder the sums/max over the files that define it."""
    if path.is_dir():
        files = folder_files(path)
        stats = [f.stat() for f in files]
        return sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=0.0)
    st = path.stat()
    return st.st_size, st.st_mtime


class HashCache:
    """sha256 per path, remembered with the size and mtime it was computed for."""

    def __init__(self, cache_file: Optional[Path]):
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._lock = threading.Lock()
        self._entries: Optional[dict[str, dict]] = None

    # -- disk -----------------------------------------------------------------------------------
    def _read_disk(self) -> dict:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a broken cache is only a cache: start over
        return data if isinstance(data, dict) else {}

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            section = self._read_disk().get(SECTION, {})
            self._entries = dict(section) if isinstance(section, dict) else {}
        return self._entries

    def _write(self) -> None:
        if self.cache_file is None:
            return
        data = self._read_disk()  # keep other sections and entries written by others meanwhile
        section = data.get(SECTION) if isinstance(data.get(SECTION), dict) else {}
        section.update(self._entries or {})
        data[SECTION] = section
        write_json_atomic(self.cache_file, data, indent=1, sort_keys=True)

    # -- entries --------------------------------------------------------------------------------
    @staticmethod
    def key(path: Path) -> str:
        return str(Path(path).resolve())

    def get(self, path: Path) -> Optional[str]:
        """The cached sha256 if the file still has the size and mtime it was hashed at."""
        try:
            size, mtime = _stat_key(Path(path))
        except OSError:
            return None
        with self._lock:
            entry = self._load().get(self.key(path))
        if not entry or entry.get("size") != size or entry.get("mtime") != mtime:
            return None
        sha = entry.get("sha256")
        return sha if isinstance(sha, str) and len(sha) == 64 else None

    def put(self, path: Path, sha256: str, stat: Optional[tuple[int, float]] = None) -> None:
        size, mtime = stat if stat is not None else _stat_key(Path(path))
        with self._lock:
            self._load()[self.key(path)] = {"size": size, "mtime": mtime, "sha256": sha256}
            try:
                self._write()
            except OSError:
                pass  # a read-only data dir must not break loading; the hash stays in memory


class Hasher:
    """Computes and caches hashes of model files and diffusers folders."""

    def __init__(self, cache: Optional[HashCache] = None):
        self.cache = cache if cache is not None else HashCache(None)
        # one computation per file at a time: a start-up prefetch and a load asking for the same
        # hash share one read of the file
        self._inflight: dict[str, Future] = {}
        self._lock = threading.Lock()

    def cached(self, path: Path) -> Optional[str]:
        return self.cache.get(path)

    def sha256(self, path: Path) -> str:
        path = Path(path)
        hit = self.cache.get(path)
        if hit is not None:
            return hit
        key = str(path.resolve())
        with self._lock:
            running = self._inflight.get(key)
            owner = running is None
            if owner:
                running = self._inflight[key] = Future()
        if not owner:
            return running.result()
        try:
            stat = _stat_key(path)  # taken before reading: a file changing meanwhile is hashed again later
            sha = self._folder_sha256(path) if path.is_dir() else sha256_file(path)
            self.cache.put(path, sha, stat)
            running.set_result(sha)
            return sha
        except BaseException as exc:
            running.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _folder_sha256(self, folder: Path) -> str:
        """Hash of a folder: sha256 over each defining file's relative path and sha256."""
        digest = hashlib.sha256()
        for f in folder_files(folder):
            digest.update(f.relative_to(folder).as_posix().encode("utf-8") + b"\0")
            digest.update(self.sha256(f).encode("ascii") + b"\n")
        return digest.hexdigest()

