"""Read a model file into a state dict, safely.

* `.safetensors`: header checked first (empty/corrupt/truncated files get a clear error), then
  `safetensors.torch.load_file`.
* `.ckpt` / `.pt` / `.pth` / `.bin`: the pickle is disassembled and its globals checked
  (`file_check.check_pickle_file`) and then loaded with `torch.load(weights_only=True)`, so a
  pickle that would run code is refused with UnsafeCheckpointError and never executed. Lightning
  checkpoints are unwrapped (`state_dict`), and their `global_step` is returned for detection.

Every error is a CheckpointError whose message names the file.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .errors import CheckpointError, UnsafeCheckpointError
from .file_check import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, check_pickle_file, read_safetensors_header


@dataclass
class LoadedStateDict:
    tensors: dict[str, torch.Tensor]
    global_step: Optional[int] = None
    metadata: Optional[dict] = None

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.tensors.items()}


def _numpy_safe_globals() -> list:
    """numpy scalar/dtype reconstructors: data, not code; old Lightning .ckpt files hold them."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return []
    out: list = [np.dtype]
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["scalar"])
            out.append(mod.scalar)
            break
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def _torch_load_weights_only(path: Path):
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UnsafeCheckpointError(path, f"torch refused to unpickle it safely ({first}); refusing to run code from a pickle") from None
        raise CheckpointError(path, f"the pickle is corrupt ({first})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"the file is truncated or corrupt ({first})") from None


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


def _unwrap(obj, path: Path) -> tuple[dict[str, torch.Tensor], Optional[int]]:
    global_step = None
    if isinstance(obj, dict):
        gs = obj.get("global_step")
        if isinstance(gs, int):
            global_step = gs
        elif isinstance(gs, torch.Tensor) and gs.numel() == 1:
            global_step = int(gs.item())
        if isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        elif isinstance(obj.get("module"), dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = obj["module"]
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"the file holds a {type(obj).__name__}, not a dictionary of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(path, "the file holds no tensors")
    return tensors, global_step


def read_state_dict(path: Path) -> LoadedStateDict:
    """All tensors of a model file on the CPU, in the dtype they were saved in."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "the file does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        header, _ = read_safetensors_header(path)
        try:
            from safetensors.torch import load_file

            tensors = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(path, f"safetensors could not read it ({exc})") from None
        meta = header.get("__metadata__") or {}
        return LoadedStateDict(tensors, None, dict(meta))
    if suffix in PICKLE_SUFFIXES:
        check_pickle_file(path)  # refuse code before torch ever sees the pickle
        tensors, global_step = _unwrap(_torch_load_weights_only(path), path)
        return LoadedStateDict(tensors, global_step, None)
    raise CheckpointError(path, f"unsupported file type {suffix!r} (use .safetensors or .ckpt)")
