"""Reading LoRA files (cached while the file is unchanged) and fitting them onto a loaded model.

Every failure is a `LoraProblem` whose message names the LoRA and its file; the caller turns it
into a job warning and goes on without that LoRA, as A1111 does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from modules.models.file_check import CheckpointError, read_safetensors_header

from .formats import LayerWeights, LoraFormatError, split_layers
from .layer_map import LayerMap, LayerTarget
from .library import FileIdentity, LoraFile


class LoraProblem(Exception):
    """Why a LoRA was left out of a job, worded for the user."""


@dataclass(frozen=True)
class ParsedLora:
    identity: FileIdentity
    layers: tuple[LayerWeights, ...]
    unknown_keys: tuple[str, ...]


@dataclass(frozen=True)
class FittedLora:
    """A LoRA's layers matched to one model's weights."""

    layers: tuple[tuple[LayerTarget, LayerWeights], ...]
    unmatched: tuple[str, ...]  # layer keys (and unknown tensor keys) that fit nothing

    @property
    def touches_text_encoder(self) -> bool:
        return any(t.is_text_encoder for t, _ in self.layers)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        read_safetensors_header(path)  # a clear message for a truncated or corrupt file
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ValueError(f"holds a {type(data).__name__}, not a dict of tensors")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


class LoraFileCache:
    """Parsed files by (path, size, mtime): a LoRA set that stays the same is read from disk once."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._items: OrderedDict[FileIdentity, ParsedLora] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # files read from disk (tests check the cache with it)

    def get(self, item: LoraFile) -> ParsedLora:
        try:
            identity = FileIdentity.of(item.path)
        except OSError as exc:
            raise LoraProblem(f"LoRA {item.name} ({item.path.name}) cannot be read: {exc}; skipped") from None
        with self._lock:
            hit = self._items.get(identity)
            if hit is not None:
                self._items.move_to_end(identity)
                return hit
        try:
            tensors = read_tensors(item.path)
            self.reads += 1
            layers, unknown = split_layers(tensors)
        except CheckpointError as exc:
            raise LoraProblem(f"LoRA {item.name} ({item.path.name}) is corrupt: {exc.reason}; skipped") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
            raise LoraProblem(f"LoRA {item.name} ({item.path.name}) is corrupt or not a LoRA file: "
                              f"{type(exc).__name__}: {exc}; skipped") from None
        parsed = ParsedLora(identity, tuple(layers), tuple(unknown))
        with self._lock:
            self._items[identity] = parsed
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return parsed


def fit(item: LoraFile, parsed: ParsedLora, layer_map: LayerMap, model_label: str) -> FittedLora:
    """Match every layer to the model; a LoRA whose layers fit nothing, or whose changes have the
    wrong shape, is made for another model family and is refused whole."""
    matched: list[tuple[LayerTarget, LayerWeights]] = []
    unmatched = list(parsed.unknown_keys)
    for layer in parsed.layers:
        target = layer_map.find(layer.key)
        if target is None:
            unmatched.append(layer.key)
            continue
        try:
            layer.delta(target.weight.shape, torch.device("meta"))  # shapes only: no memory, no math
        except (LoraFormatError, RuntimeError) as exc:
            raise LoraProblem(f"LoRA {item.name} ({item.path.name}) does not fit {model_label}: layer "
                              f"{layer.key} {exc}; it is made for another model family; skipped") from None
        matched.append((target, layer))
    if not matched:
        raise LoraProblem(f"LoRA {item.name} ({item.path.name}) does not fit {model_label}: none of its "
                          f"{len(unmatched)} layers match the model; it is made for another model family; skipped")
    return FittedLora(tuple(matched), tuple(unmatched))


__all__ = ["LoraProblem", "ParsedLora", "FittedLora", "LoraFileCache", "read_tensors", "fit"]
