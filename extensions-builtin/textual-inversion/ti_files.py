"""Textual-inversion embedding files as A1111 reads them, into one typed value.

Forms read:
- A1111 ``.pt``: ``{"string_to_param": {"*": [n, w]}, "step", "sd_checkpoint" (or "hash"), "sd_checkpoint_name"}``;
- ``.safetensors``: ``{"emb_params": [n, w]}``, or SDXL's ``{"clip_l": [n, 768], "clip_g": [n, 1280]}``;
- diffusers ``.bin`` (``learned_embeds.bin``): ``{token: [w] or [n, w]}``.

Pickled files load with ``torch.load(weights_only=True)`` only: an embedding is data, and a file that
needs more than tensors and plain values to load is refused, never executed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
XL_KEYS = ("clip_l", "clip_g")  # SDXL's two text encoders, in the model's order


class EmbeddingFileError(ValueError):
    """The file is not an embedding this app can read; the message says why."""


@dataclass(frozen=True, eq=False)
class EmbeddingFile:
    """One embedding file, read. `vectors` holds one ``[n, width]`` tensor per text encoder it was
    made for: a single entry for SD 1.x/2.x files, ``clip_l`` and ``clip_g`` for SDXL ones."""

    name: str  # the trigger word: the file name's stem
    path: Path
    vectors: tuple[torch.Tensor, ...]
    sha256: str
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    is_xl: bool = False
    widths: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(v.shape[-1]) for v in self.vectors))

    @property
    def count(self) -> int:
        """How many vectors (prompt tokens) the embedding takes."""
        return int(self.vectors[0].shape[0])

    @property
    def shape(self) -> int:
        """A1111's "shape": the vector width, summed over SDXL's two encoders."""
        return sum(self.widths)

    @property
    def short_hash(self) -> str:
        """A1111's TI hash in infotext: the first 12 hex digits of the file's sha256."""
        return self.sha256[:12]

    def fits(self, widths: tuple[int, ...]) -> bool:
        """Whether the vectors fit a model whose text encoders have these widths."""
        return self.widths == tuple(widths)


def read_embedding(path: Path) -> EmbeddingFile:
    """Reads one file; raises `EmbeddingFileError` naming what is wrong with it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise EmbeddingFileError(f"{path.name}: not an embedding file ({', '.join(EMBEDDING_SUFFIXES)})")
    raw = path.read_bytes()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load as load_safetensors

            data: Any = load_safetensors(raw)
        else:
            import io

            data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error means "not readable"; named below
        raise EmbeddingFileError(f"{path.name}: cannot be read as {suffix}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise EmbeddingFileError(f"{path.name}: holds a {type(data).__name__}, not a dict of tensors")
    vectors, is_xl = _vectors(path.name, data)
    return EmbeddingFile(
        name=path.stem, path=path, vectors=vectors, sha256=hashlib.sha256(raw).hexdigest(),
        step=_optional_int(data.get("step")),
        sd_checkpoint=_optional_str(data.get("sd_checkpoint")) or _optional_str(data.get("hash")),
        sd_checkpoint_name=_optional_str(data.get("sd_checkpoint_name")), is_xl=is_xl)


def _vectors(file_name: str, data: Mapping) -> tuple[tuple[torch.Tensor, ...], bool]:
    if all(isinstance(data.get(k), torch.Tensor) for k in XL_KEYS):
        parts = tuple(_as_matrix(file_name, data[k]) for k in XL_KEYS)
        if parts[0].shape[0] != parts[1].shape[0]:
            raise EmbeddingFileError(f"{file_name}: clip_l and clip_g have different numbers of vectors")
        return parts, True
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            raise EmbeddingFileError(f"{file_name}: string_to_param must hold exactly one tensor")
        return (_as_matrix(file_name, next(iter(params.values()))),), False
    if isinstance(data.get("emb_params"), torch.Tensor):
        return (_as_matrix(file_name, data["emb_params"]),), False
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(data) == 1 and len(tensors) == 1:  # diffusers: {"<token>": tensor}
        return (_as_matrix(file_name, tensors[0]),), False
    raise EmbeddingFileError(f"{file_name}: no string_to_param, emb_params, clip_l/clip_g or single "
                             f"token tensor in it (keys: {', '.join(map(str, list(data)[:8]))})")


def _as_matrix(file_name: str, tensor: Any) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (1, 2) or tensor.numel() == 0:
        raise EmbeddingFileError(f"{file_name}: the embedding must be a [vectors, width] tensor")
    matrix = tensor.detach().to("cpu", torch.float32)
    return matrix.unsqueeze(0) if matrix.ndim == 1 else matrix


def _optional_int(value: Any) -> Optional[int]:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None
