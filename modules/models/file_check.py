"""Cheap, torch-free checks of model files, so the catalog can list a bad file with its reason.

* `.safetensors`: the header is read and checked against the file size (empty, corrupt header and
  truncated files are caught here without reading the weights); the tensor names and shapes it
  lists are returned, which is enough to recognise the architecture.
* `.ckpt` / `.pt` / `.pth` / `.bin`: torch pickles. The pickle program is disassembled (never run)
  with `pickletools` and every global it references is checked against the short list of names a
  plain tensor dictionary needs; anything else (`os.system`, `builtins.exec`, some class) makes the
  file unusable. `checkpoint_io` then loads with `torch.load(weights_only=True)` as the real gate.
"""

from __future__ import annotations

import io
import json
import math
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from .errors import CheckpointError, UnsafeCheckpointError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}

# What a tensor dictionary saved by torch needs, and nothing that can run code. Mirrors
# torch.load(weights_only=True) plus numpy scalars/dtypes (old Lightning checkpoints hold them).
_TORCH_DTYPES = {
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "double", "float", "half", "long", "int",
}
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "complex"),
        ("builtins", "bool"),
        ("builtins", "str"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("_codecs", "encode"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._utils", "_rebuild_meta_tensor_no_storage"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch", "Tensor"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.storage", "UntypedStorage"),
        ("torch.storage", "TypedStorage"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }
)


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg", "_codecs": "_codecs"}


def is_allowed_global(module: str, name: str) -> bool:
    if (module, name) in ALLOWED_GLOBALS:
        return True
    if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES):
        return True
    if module == "numpy.dtypes" and name.endswith("DType"):
        return True
    return False


@dataclass(frozen=True)
class FileReport:
    """What a quick look at a model file found. `shapes` is set for safetensors files."""

    usable: bool
    reason: Optional[str] = None
    shapes: Optional[dict[str, tuple[int, ...]]] = None
    metadata: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# safetensors


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The parsed JSON header of a safetensors file and the offset where tensor data starts.

    Raises CheckpointError naming the file for an empty, corrupt or truncated file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes)")
    if size < 8:
        raise CheckpointError(path, f"the file is truncated ({size} bytes; a safetensors file starts with an 8-byte header length)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n == 0 or n > MAX_HEADER_BYTES:
            raise CheckpointError(path, f"not a valid safetensors file (header length {n} is implausible); the file is corrupt")
        if 8 + n > size:
            raise CheckpointError(path, f"the file is truncated: its header claims {n} bytes but only {size - 8} follow")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(path, f"the safetensors header is not valid JSON ({exc.__class__.__name__}); the file is corrupt") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "the safetensors header is not a JSON object; the file is corrupt")
    data_len = size - 8 - n
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            expected = math.prod(int(d) for d in shape) * _DTYPE_BYTES.get(dtype, 0)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(path, f"the safetensors header entry {name!r} is malformed; the file is corrupt") from None
        if dtype in _DTYPE_BYTES and end - begin != expected:
            raise CheckpointError(path, f"tensor {name!r} has {end - begin} bytes for shape {shape} {dtype}; the file is corrupt")
        end_max = max(end_max, end)
    if end_max > data_len:
        raise CheckpointError(
            path, f"the file is truncated: the tensors need {end_max} bytes of data but only {data_len} are present"
        )
    return header, 8 + n


def safetensors_shapes(header: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}


# ---------------------------------------------------------------------------------------------
# pickles


def _iter_globals(stream: BinaryIO) -> Iterator[tuple[Optional[str], Optional[str]]]:
    """(module, name) of every global one pickle program references, found without running it.

    Values that cannot be resolved statically come back as None (the caller refuses them).
    """
    stack: list[object] = []  # a shadow of pushed strings; other pushes are None
    memo: dict[int, object] = {}
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"):
            stack.append(arg if isinstance(arg, str) else None)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = stack[-1] if stack else None
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(int(arg)))
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            yield module, attr
            stack.append(None)
        elif name == "STACK_GLOBAL":
            attr = stack.pop() if stack else None
            module = stack.pop() if stack else None
            yield (module if isinstance(module, str) else None), (attr if isinstance(attr, str) else None)
            stack.append(None)
        elif name == "STOP":
            return
        else:
            stack.append(None)


def _check_pickle_stream(path: Path, stream: BinaryIO, what: str) -> None:
    try:
        for module, attr in _iter_globals(stream):
            if module is None or attr is None:
                raise UnsafeCheckpointError(path, f"the pickle in {what} builds a global reference that cannot be checked; refusing to load it")
            module = _PY2_MODULES.get(module, module)  # protocol 2 writes Python 2 module names
            if not is_allowed_global(module, attr):
                raise UnsafeCheckpointError(
                    path,
                    f"the pickle in {what} references {module}.{attr}, which could run code; refusing to load it "
                    "(convert the file to .safetensors from a trusted source)",
                )
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # pickletools raises ValueError/struct.error on garbage
        raise CheckpointError(path, f"{what} is not a valid pickle ({type(exc).__name__}); the file is corrupt or truncated") from None


def check_pickle_file(path: Path) -> None:
    """Raise CheckpointError / UnsafeCheckpointError unless the file is a plain torch tensor pickle."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                pkls = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not pkls:
                    raise CheckpointError(path, "a zip file without data.pkl is not a torch checkpoint")
                for member in pkls:
                    _check_pickle_stream(path, io.BytesIO(zf.read(member)), member)
        except zipfile.BadZipFile as exc:
            raise CheckpointError(path, f"the file is truncated or corrupt (bad zip archive: {exc})") from None
        except (EOFError, OSError, zipfile.LargeZipFile) as exc:
            raise CheckpointError(path, f"the file is truncated or corrupt ({type(exc).__name__}: {exc})") from None
        return
    if not head[:1] == b"\x80":
        raise CheckpointError(path, "not a torch checkpoint (neither a zip archive nor a pickle); the file is corrupt")
    # Legacy torch.save format: magic number, protocol, sys info and the object, each a pickle.
    with open(path, "rb") as f:
        for i in range(4):
            _check_pickle_stream(path, f, f"pickle #{i + 1}")


# ---------------------------------------------------------------------------------------------


def verify_model_file(path: Path) -> Optional[dict]:
    """Raise the precise CheckpointError for a bad file; return a safetensors header when good."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            return read_safetensors_header(path)[0]
        if suffix in PICKLE_SUFFIXES:
            check_pickle_file(path)
            return None
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the file ({exc.strerror or exc})") from None
    raise CheckpointError(path, f"unsupported file type {suffix!r}")


def check_model_file(path: Path) -> FileReport:
    """A quick, torch-free verdict on a checkpoint or VAE file. Never raises for a bad file."""
    try:
        header = verify_model_file(path)
    except CheckpointError as exc:
        return FileReport(False, exc.reason)
    if header is None:
        return FileReport(True)
    meta = header.get("__metadata__") or {}
    return FileReport(True, None, safetensors_shapes(header), {str(k): str(v) for k, v in dict(meta).items()})
