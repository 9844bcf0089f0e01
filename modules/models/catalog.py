"""The list of checkpoints and VAEs on disk. Torch-free: the web UI imports this.

Checkpoints come from `models/Stable-diffusion` (recursively) and every `--ckpt-dir`: `.safetensors`
and `.ckpt` files, plus diffusers folders (a folder holding `model_index.json`). The project's
embedded model is listed last and is the default whenever no usable file is found. Names follow
A1111: `name` is the path relative to its folder, the title is `"name [shorthash]"` once the hash is
known (computed lazily, cached on disk) and just `name` before that or with `no_hashing`.

A file that cannot be used (empty, corrupt or truncated header, a pickle that would run code, not a
Stable Diffusion checkpoint) is still listed, with `usable=False` and the reason, and never breaks
the listing. VAEs come from `models/VAE` (`.safetensors`, `.pt`, `.ckpt`) and from `name.vae.*`
files beside checkpoints; a request picks one by name, `"Automatic"` (the VAE named like the
checkpoint, else the checkpoint's own) or `"None"` (the checkpoint's own).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional, Union

from ..paths import EMBEDDED_MODEL_DIR, Paths
from .detect import describe, yaml_beside
from .errors import UnknownModelError, close_matches
from .file_check import check_model_file
from .hashing import HashCache, Hasher, short_hash

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
VAE_AUTOMATIC = "Automatic"
VAE_NONE = "None"
_HASH_SUFFIX = re.compile(r"^(?P<name>.*?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]\s*$")


def _is_vae_file_name(name: str) -> bool:
    low = name.lower()
    return any(low.endswith(".vae" + s) for s in VAE_SUFFIXES)


@dataclass(frozen=True)
class CheckpointInfo:
    """One entry of the checkpoint list."""

    path: Path
    name: str  # relative to its folder, with "/" separators; A1111's `name`
    kind: str  # "safetensors" | "ckpt" | "diffusers"
    size: int = 0
    mtime: float = 0.0
    usable: bool = True
    reason: Optional[str] = None  # why it is unusable
    architecture: Optional[str] = None  # variant ("sd1", "sdxl", ...) when the header told us
    sha256: Optional[str] = None  # once known
    embedded: bool = False

    @property
    def short_hash(self) -> Optional[str]:
        return short_hash(self.sha256)

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]" if self.sha256 else self.name

    @property
    def model_name(self) -> str:
        """What infotext writes as `Model:` (A1111: the name without extension, "/" as "_")."""
        base = self.name.replace("/", "_").replace("\\", "_")
        return base if self.kind == "diffusers" else os.path.splitext(base)[0]

    @property
    def filename(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Optional[str]:
        """An A1111-style `.yaml` beside the file, if any (it can set v-prediction)."""
        if self.kind == "diffusers":
            return None
        found = yaml_beside(self.path)
        return str(found) if found else None

    def with_hash(self, sha256: Optional[str]) -> "CheckpointInfo":
        return replace(self, sha256=sha256)


@dataclass(frozen=True)
class VaeInfo:
    """One entry of the VAE list."""

    path: Path
    name: str  # file name relative to models/VAE (or to the checkpoint folder for name.vae.* files)
    size: int = 0
    mtime: float = 0.0
    usable: bool = True
    reason: Optional[str] = None
    sha256: Optional[str] = None

    @property
    def short_hash(self) -> Optional[str]:
        return short_hash(self.sha256)

    @property
    def title(self) -> str:
        return self.name

    @property
    def filename(self) -> str:
        return str(self.path)

    def with_hash(self, sha256: Optional[str]) -> "VaeInfo":
        return replace(self, sha256=sha256)


class ModelCatalog:
    """Scans the model folders. `refresh()` rescans; everything else reads the last scan."""

    def __init__(
        self,
        paths: Paths,
        *,
        no_hashing: bool = False,
        hasher: Optional[Hasher] = None,
        embedded_dir: Optional[Path] = EMBEDDED_MODEL_DIR,
    ):
        self.paths = paths
        self.no_hashing = no_hashing
        self.hasher = hasher if hasher is not None else Hasher(HashCache(paths.cache_file))
        self.embedded_dir = Path(embedded_dir) if embedded_dir is not None else None
        self._lock = threading.RLock()
        self._checks: dict[tuple[str, int, float], tuple[bool, Optional[str], Optional[str]]] = {}
        self._checkpoints: list[CheckpointInfo] = []
        self._vaes: list[VaeInfo] = []
        self.refresh()

    # -- scanning -------------------------------------------------------------------------------
    @property
    def checkpoint_roots(self) -> list[Path]:
        roots = [self.paths.stable_diffusion_dir, *[Path(p) for p in self.paths.ckpt_dirs]]
        seen, out = set(), []
        for r in roots:
            key = os.path.normcase(os.path.abspath(r))
            if key not in seen:
                seen.add(key)
                out.append(Path(r))
        return out

    def refresh(self) -> None:
        """Rescan the folders: files added since are listed, removed ones dropped."""
        checkpoints: list[CheckpointInfo] = []
        vaes: list[VaeInfo] = []
        seen: set[str] = set()
        for root in self.checkpoint_roots:
            for path, rel, is_dir in _walk_models(root):
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                if is_dir:
                    checkpoints.append(self._diffusers_info(path, rel))
                elif _is_vae_file_name(rel):
                    vaes.append(self._vae_info(path, rel))
                elif path.suffix.lower() in CHECKPOINT_SUFFIXES:
                    checkpoints.append(self._file_info(path, rel))
        for path, rel, is_dir in _walk_models(self.paths.vae_dir, suffixes=VAE_SUFFIXES, folders=False):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                vaes.append(self._vae_info(path, rel))
        checkpoints.sort(key=lambda c: c.name.lower())
        vaes.sort(key=lambda v: v.name.lower())
        embedded = self._embedded_info()
        if embedded is not None:
            checkpoints.append(embedded)
        with self._lock:
            self._checkpoints = checkpoints
            self._vaes = vaes

    def _check(self, path: Path, size: int, mtime: float, *, checkpoint: bool) -> tuple[bool, Optional[str], Optional[str]]:
        key = (str(path), size, mtime)
        hit = self._checks.get(key)
        if hit is not None:
            return hit
        report = check_model_file(path)
        usable, reason, arch = report.usable, report.reason, None
        if usable and checkpoint and report.shapes is not None:
            detected, why = describe(report.shapes, path)
            if detected is None:
                usable, reason = False, why
            else:
                arch = detected.variant
        result = (usable, reason, arch)
        self._checks[key] = result
        return result

    def _known_hash(self, path: Path) -> Optional[str]:
        return None if self.no_hashing else self.hasher.cached(path)

    def _file_info(self, path: Path, rel: str) -> CheckpointInfo:
        try:
            st = path.stat()
        except OSError as exc:
            return CheckpointInfo(path, rel, _kind(path), usable=False, reason=f"cannot read the file ({exc.strerror})")
        usable, reason, arch = self._check(path, st.st_size, st.st_mtime, checkpoint=True)
        return CheckpointInfo(
            path, rel, _kind(path), st.st_size, st.st_mtime, usable, reason, arch, self._known_hash(path) if usable else None
        )

    def _vae_info(self, path: Path, rel: str) -> VaeInfo:
        try:
            st = path.stat()
        except OSError as exc:
            return VaeInfo(path, rel, usable=False, reason=f"cannot read the file ({exc.strerror})")
        usable, reason, _ = self._check(path, st.st_size, st.st_mtime, checkpoint=False)
        return VaeInfo(path, rel, st.st_size, st.st_mtime, usable, reason, self._known_hash(path) if usable else None)

    def _diffusers_info(self, folder: Path, rel: str, embedded: bool = False) -> CheckpointInfo:
        usable, reason = _check_diffusers_folder(folder)
        try:
            mtime = (folder / "model_index.json").stat().st_mtime
        except OSError:
            mtime = 0.0
        return CheckpointInfo(
            folder, rel, "diffusers", 0, mtime, usable, reason, None,
            self._known_hash(folder) if usable else None, embedded,
        )

    def _embedded_info(self) -> Optional[CheckpointInfo]:
        d = self.embedded_dir
        if d is None or not (d / "model_index.json").is_file():
            return None
        return self._diffusers_info(d, d.name, embedded=True)

    # -- listing --------------------------------------------------------------------------------
    def checkpoints(self, usable_only: bool = False) -> list[CheckpointInfo]:
        with self._lock:
            items = list(self._checkpoints)
        return [c for c in items if c.usable] if usable_only else items

    def vaes(self, usable_only: bool = False) -> list[VaeInfo]:
        with self._lock:
            items = list(self._vaes)
        return [v for v in items if v.usable] if usable_only else items

    def checkpoint_titles(self) -> list[str]:
        return [c.title for c in self.checkpoints(usable_only=True)]

    def vae_choices(self) -> list[str]:
        return [VAE_AUTOMATIC, VAE_NONE, *[v.name for v in self.vaes(usable_only=True)]]

    def default_checkpoint(self) -> Optional[CheckpointInfo]:
        """The first usable file in the folders; the embedded model when there is none."""
        usable = self.checkpoints(usable_only=True)
        files = [c for c in usable if not c.embedded]
        if files:
            return files[0]
        return usable[0] if usable else None

    # -- lookups --------------------------------------------------------------------------------
    def find_checkpoint(self, name: Union[str, CheckpointInfo]) -> CheckpointInfo:
        """The checkpoint a title, name, name without extension, file name or hash refers to.

        Unusable files are returned too (the caller reports their reason); unknown names raise
        UnknownModelError with the closest names.
        """
        if isinstance(name, CheckpointInfo):
            return self._current(name)
        items = self.checkpoints()
        hit = _lookup(name, items, lambda c: (c.title, c.name, c.model_name))
        if hit is not None:
            return hit
        raise UnknownModelError.for_candidates(
            "checkpoint", name, [c.title for c in items] + [c.name for c in items if c.sha256]
        )

    def find_vae(self, name: Union[str, VaeInfo]) -> VaeInfo:
        if isinstance(name, VaeInfo):
            return name
        items = self.vaes()
        hit = _lookup(name, items, lambda v: (v.name, os.path.splitext(v.name)[0]))
        if hit is not None:
            return hit
        raise UnknownModelError.for_candidates("VAE", name, [VAE_AUTOMATIC, VAE_NONE] + [v.name for v in items])

    def resolve_vae(self, choice: Optional[str], checkpoint: CheckpointInfo) -> Optional[VaeInfo]:
        """The VAE file a request's choice means for this checkpoint; None = the checkpoint's own."""
        if choice is None or choice.strip().lower() in ("automatic", "auto", ""):
            return self.vae_near_checkpoint(checkpoint)
        if choice.strip().lower() == "none":
            return None
        return self.find_vae(choice)

    def vae_near_checkpoint(self, checkpoint: CheckpointInfo) -> Optional[VaeInfo]:
        """A1111's "Automatic": `<checkpoint name>.vae.{safetensors,pt,ckpt}` beside it or in models/VAE."""
        if checkpoint.kind == "diffusers":
            stem = checkpoint.path.name
        else:
            stem = checkpoint.path.name[: -len(checkpoint.path.suffix)] if checkpoint.path.suffix else checkpoint.path.name
        wanted_beside = {(stem + ".vae" + s).lower() for s in VAE_SUFFIXES}
        wanted_folder = wanted_beside | {(stem + s).lower() for s in VAE_SUFFIXES}
        beside, in_folder = None, None
        for v in self.vaes(usable_only=True):
            fname = v.path.name.lower()
            if v.path.parent == checkpoint.path.parent and fname in wanted_beside:
                beside = beside or v
            elif _is_under(v.path, self.paths.vae_dir) and fname in wanted_folder:
                in_folder = in_folder or v
        return beside or in_folder

    # -- hashes ---------------------------------------------------------------------------------
    def ensure_hash(self, info):
        """The entry with its sha256 filled in (computed now if needed); unchanged with no_hashing."""
        if self.no_hashing or info.sha256 or not info.usable:
            return info
        updated = info.with_hash(self.hasher.sha256(info.path))
        with self._lock:
            if isinstance(updated, CheckpointInfo):
                self._checkpoints = [updated if c.path == info.path else c for c in self._checkpoints]
            else:
                self._vaes = [updated if v.path == info.path else v for v in self._vaes]
        return updated

    def _current(self, info: CheckpointInfo) -> CheckpointInfo:
        for c in self.checkpoints():
            if c.path == info.path:
                return c
        return info


# ---------------------------------------------------------------------------------------------


def _kind(path: Path) -> str:
    return "safetensors" if path.suffix.lower() == ".safetensors" else "ckpt"


def _is_under(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


def _walk_models(root: Path, suffixes: Iterable[str] = CHECKPOINT_SUFFIXES + VAE_SUFFIXES, folders: bool = True):
    """(path, name relative to root, is_diffusers_folder) for every model under root, sorted."""
    root = Path(root)
    if not root.is_dir():
        return
    suffixes = tuple(s.lower() for s in suffixes)
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if folders and here != root and "model_index.json" in filenames:
            dirnames[:] = []  # a diffusers folder is one model; don't list its weight files
            yield here, here.relative_to(root).as_posix(), True
            continue
        for fn in sorted(filenames):
            if fn.startswith(".") or not fn.lower().endswith(suffixes):
                continue
            p = here / fn
            yield p, p.relative_to(root).as_posix(), False


def _check_diffusers_folder(folder: Path) -> tuple[bool, Optional[str]]:
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return False, f"model_index.json is unreadable ({type(exc).__name__})"
    if not isinstance(index, dict):
        return False, "model_index.json is not a JSON object"
    for part in ("unet", "vae", "scheduler"):
        if not (folder / part).is_dir():
            return False, f"the diffusers folder has no {part}/ subfolder"
    return True, None


def _lookup(name: str, items: list, keys_of):
    """Find `name` among items by exact keys, then hash, then case-insensitively, then by file name."""
    if name is None:
        return None
    query = str(name).strip().replace("\\", "/")
    if not query:
        return None
    for it in items:
        if query in keys_of(it):
            return it
    m = _HASH_SUFFIX.match(query)
    base, wanted_hash = (m.group("name").strip(), m.group("hash").lower()) if m else (query, None)
    # A bare hash, or "name [hash]" whose file was renamed: match known hashes.
    hex_query = (wanted_hash or (query.lower() if re.fullmatch(r"[0-9a-fA-F]{8,64}", query) else None))
    if hex_query:
        for it in items:
            if it.sha256 and it.sha256.startswith(hex_query):
                return it
    if wanted_hash:
        for it in items:
            if base in keys_of(it):
                return it
    low = base.lower()
    for it in items:
        if low in (k.lower() for k in keys_of(it)):
            return it
    by_file = [it for it in items if it.path.name.lower() == low or os.path.splitext(it.path.name)[0].lower() == low]
    if len(by_file) == 1:
        return by_file[0]
    return None


__all__ = ["CheckpointInfo", "VaeInfo", "ModelCatalog", "VAE_AUTOMATIC", "VAE_NONE", "close_matches"]
