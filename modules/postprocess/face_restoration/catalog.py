"""Which face restorers exist, which file each one loads, and where it is looked for. Torch-free.

A1111 offers "CodeFormer" and "GFPGAN"; RestoreFormer comes from GFPGAN's own releases (its
`RestoreFormer.pth` sits beside `GFPGANv1.4.pth` on that release page), so it is looked for in the
GFPGAN folder too. Only names are matched here: whether a file really holds the architecture is
spandrel's call when it is loaded.
"""

from __future__ import annotations

import json
import struct
import typing
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from modules.cmd_args import MODEL_DIR_FLAGS

# A1111's order: its default model first.
FaceRestorerName = Literal["CodeFormer", "GFPGAN", "RestoreFormer"]
RESTORER_NAMES: tuple[str, ...] = typing.get_args(FaceRestorerName)
MODEL_EXTENSIONS = (".pth", ".safetensors")


@dataclass(frozen=True)
class RestorerSpec:
    name: str
    folder_kind: str  # Paths.model_dir(kind)
    release_files: tuple[str, ...]  # the released file names, preferred first
    name_hint: str  # any other file of the folder whose name holds this (lower case) also counts
    architecture: str  # spandrel's architecture id

    def find_file(self, folder: Path) -> Optional[Path]:
        """The release file when present (case-insensitive), else the first other file whose name
        holds `name_hint`; None when there is none."""
        try:
            files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MODEL_EXTENSIONS)
        except OSError:  # no folder yet
            return None
        by_name = {p.name.lower(): p for p in files}
        for release in self.release_files:
            if release.lower() in by_name:
                return by_name[release.lower()]
        return next((p for p in files if self.name_hint in p.name.lower()), None)

    def missing_message(self, folder: Path) -> str:
        others = self.release_files[1:]
        alternatives = f" (or {', '.join(others)})" if others else ""
        flag = next((f for f, kind in MODEL_DIR_FLAGS.items() if kind == self.folder_kind), None)
        elsewhere = f", or point --{flag} at the folder that holds it" if flag else ""
        return (f"{self.name} is not installed: put {self.release_files[0]}{alternatives} "
                f"in {folder}{elsewhere}")


SPECS: tuple[RestorerSpec, ...] = (
    RestorerSpec("CodeFormer", "Codeformer", ("codeformer.pth", "codeformer-v0.1.0.pth"), "codeformer", "CodeFormer"),
    RestorerSpec("GFPGAN", "GFPGAN", ("GFPGANv1.4.pth", "GFPGANv1.3.pth"), "gfpgan", "GFPGAN"),
    RestorerSpec("RestoreFormer", "GFPGAN", ("RestoreFormer.pth",), "restoreformer", "RestoreFormer"),
)
assert tuple(s.name for s in SPECS) == RESTORER_NAMES


def spec_for(name: str) -> Optional[RestorerSpec]:
    return next((s for s in SPECS if s.name == name), None)


def probe_file(path: Path) -> Optional[str]:
    """Why `path` cannot be a model file, from its structure alone (no tensors read), or None.

    Catches empty, truncated and foreign files while listing; what passes may still fail to load.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return "the file is empty"
        if path.suffix.lower() == ".safetensors":
            with path.open("rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    return "not a safetensors file (too short)"
                (header_len,) = struct.unpack("<Q", head)
                if header_len > size - 8:
                    return "not a safetensors file, or truncated (header past the end)"
                header = json.loads(fh.read(header_len))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            if 8 + header_len + max(ends, default=0) > size:
                return "truncated safetensors file (tensor data past the end)"
            return None
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if not any(n.endswith("data.pkl") for n in zf.namelist()):
                    return "a zip file that is not a PyTorch checkpoint"
            return None
        with path.open("rb") as fh:
            if fh.read(1) == b"\x80":  # a pre-1.6 (non-zip) torch.save pickle
                return None
        return "not a PyTorch checkpoint (neither a complete zip archive nor a pickle; truncated?)"
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
