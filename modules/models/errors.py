"""Errors raised by model management. Torch-free: the web UI and the API import these.

Every message names the file or the name that caused it, so the UI and the API can show it as is.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Iterable, Sequence, Union


class ModelError(Exception):
    """Base class of every model-management error."""


class CheckpointError(ModelError):
    """A model file that cannot be read or used: corrupt, truncated, empty, unsafe or unsupported."""

    def __init__(self, path: Union[str, Path, None], reason: str):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        where = f" {self.path}" if self.path is not None else ""
        super().__init__(f"Cannot load model file{where}: {reason}")


class UnsafeCheckpointError(CheckpointError):
    """A pickle (.ckpt/.pt) that would import or call something other than tensor data."""


class UnsupportedModelError(CheckpointError):
    """A readable file whose architecture is not one we can load (or not a checkpoint at all)."""


class NoModelError(ModelError):
    """Nothing usable to load: no checkpoint in the folders and no embedded model."""


class UnknownModelError(ModelError, LookupError):
    """A checkpoint or VAE name that matches nothing in the catalog.

    `close_matches` holds the nearest known names (difflib), best first.
    """

    def __init__(self, kind: str, name: str, close_matches: Sequence[str] = ()):
        self.kind = kind
        self.name = name
        self.close_matches = list(close_matches)
        msg = f"Unknown {kind} {name!r}."
        if self.close_matches:
            msg += " Close matches: " + ", ".join(repr(m) for m in self.close_matches) + "."
        else:
            msg += f" No {kind} with a similar name is available."
        super().__init__(msg)

    def __str__(self) -> str:  # LookupError/KeyError would repr() the message
        return self.args[0]

    @classmethod
    def for_candidates(
        cls, kind: str, name: str, candidates: Iterable[str], n: int = 5, cutoff: float = 0.5
    ) -> "UnknownModelError":
        return cls(kind, name, close_matches(name, candidates, n=n, cutoff=cutoff))


_EXT = re.compile(r"\.(safetensors|ckpt|pt|pth|bin)$")
_HASH = re.compile(r"\s*\[[0-9a-f]+\]$")


def _stems(name: str) -> set[str]:
    """"sub/model.safetensors [abc]" -> {"sub/model", "model"}: what people actually type."""
    stem = _EXT.sub("", _HASH.sub("", name.lower().strip()))
    return {stem, stem.rsplit("/", 1)[-1]} - {""}


def close_matches(name: str, candidates: Iterable[str], n: int = 5, cutoff: float = 0.5) -> list[str]:
    """Nearest names to `name`, best first, in the candidates' own spelling. Names are compared
    without extension and hash (difflib ratio); a candidate containing the query also counts."""
    queries = _stems(name)
    scored: dict[str, float] = {}
    for cand in candidates:
        best = 0.0
        for key in _stems(cand):
            for q in queries:
                ratio = difflib.SequenceMatcher(None, q, key).ratio()
                if len(q) >= 3 and q in key:
                    ratio = max(ratio, 0.8)
                best = max(best, ratio)
        if best >= cutoff:
            scored[cand] = max(best, scored.get(cand, 0.0))
    return [c for c, _ in sorted(scored.items(), key=lambda kv: -kv[1])][:n]


def describe_reason(exc: BaseException) -> str:
    """A one-line reason for an exception, for listing a file as unusable."""
    if isinstance(exc, CheckpointError):
        return exc.reason
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "ModelError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "NoModelError",
    "UnknownModelError",
    "close_matches",
    "describe_reason",
]

