"""Merging a set of LoRAs into the model's weights for one batch, and putting them back exactly.

For each touched weight W the patch computes merged = W + sum_i w_i * delta_i in float32 (cast to
W's dtype once), copies it into W on entry, and copies the untouched original back on exit, so the
weights are bitwise what they were. Original and merged copies are kept while the same LoRA set
stays in use, so a repeated job costs two tensor copies per touched weight and no file reads or
matrix products. A weight changed by someone else since (another extension's patch, a reload)
has a new version counter: its original is copied again and the merge redone.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Hashable, Iterator, Sequence

import torch

from .formats import LayerWeights
from .layer_map import LayerTarget


@dataclass(frozen=True)
class Contribution:
    """One layer of one LoRA at the user's weight for that layer's side (text encoder or UNet)."""

    target: LayerTarget
    layer: LayerWeights
    weight: float


def _version(t: torch.Tensor) -> int:
    return t._version  # bumped by every in-place change, ours included


class _Original:
    def __init__(self, param: torch.nn.Parameter) -> None:
        self.param = param
        self.tensor = param.detach().clone()
        self.version = _version(param)

    @property
    def current(self) -> bool:
        return _version(self.param) == self.version


class WeightPatcher:
    """The LoRA patch state of one pipeline (one per loaded model)."""

    def __init__(self) -> None:
        self._originals: dict[int, _Original] = {}
        self._signature: Hashable = None
        self._merged: dict[int, torch.Tensor] = {}

    def _merge(self, signature: Hashable, contributions: Sequence[Contribution]) -> None:
        by_param: dict[int, list[Contribution]] = {}
        for c in contributions:
            by_param.setdefault(id(c.target.weight), []).append(c)
        originals: dict[int, _Original] = {}
        for key, group in by_param.items():
            param = group[0].target.weight
            old = self._originals.get(key)
            originals[key] = old if old is not None and old.param is param and old.current else _Original(param)
        merged: dict[int, torch.Tensor] = {}
        for key, group in by_param.items():
            base = originals[key].tensor
            acc = base.to(torch.float32, copy=True)
            for c in group:
                acc += c.weight * c.layer.delta(base.shape, base.device)
            merged[key] = acc.to(base.dtype)
        self._originals, self._merged, self._signature = originals, merged, signature

    def _up_to_date(self, signature: Hashable) -> bool:
        return (self._signature == signature
                and all(o.current for o in self._originals.values()))

    @contextmanager
    def patched(self, signature: Hashable, contributions: Sequence[Contribution]) -> Iterator[None]:
        """Weights merged with `contributions` inside the block; the exact originals after it.
        `signature` names the set (files as they are now, weights): same signature, same merge."""
        if not self._up_to_date(signature):
            self._merge(signature, contributions)
        applied: list[_Original] = []
        try:
            for key, merged in self._merged.items():
                original = self._originals[key]
                applied.append(original)
                original.param.data.copy_(merged)
            yield
        finally:
            for original in applied:
                original.param.data.copy_(original.tensor)
                original.version = _version(original.param)


__all__ = ["WeightPatcher", "Contribution"]
