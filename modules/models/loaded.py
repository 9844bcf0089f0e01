"""The contract between model management and the engine: a loaded model and who hands it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:  # torch-free at import, so listings (UI) can use ModelFamily
    import torch


class ModelFamily(str, Enum):
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl-refiner"

    @property
    def is_xl(self) -> bool:
        return self in (ModelFamily.SDXL, ModelFamily.SDXL_REFINER)


@dataclass
class LoadedModel:
    """A checkpoint in memory. `pipe` is a diffusers pipeline holding vae, text encoder(s),
    tokenizer(s), unet and a scheduler whose config is the base for every sampler."""

    title: str  # A1111 title: "name.safetensors [shorthash]"
    name: str  # written as "Model: ..." in infotext
    family: ModelFamily
    pipe: Any
    native_size: int
    short_hash: Optional[str] = None
    vae_name: Optional[str] = None  # written as "VAE: ..." when not the checkpoint's own
    vae_hash: Optional[str] = None
    path: Optional[str] = None

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def vae(self):
        return self.pipe.vae

    # (placement key, device): see `device`
    _device_cache: Optional[tuple[tuple, "torch.device"]] = field(default=None, init=False, repr=False, compare=False)

    @property
    def device(self) -> "torch.device":
        """Where computation happens; under CPU offload (--medvram/--lowvram) the weights rest
        elsewhere and this is the offload hooks' execution device.

        diffusers' `_execution_device` walks every module of the pipeline (~4 ms), so the answer
        is kept with a cheap key of what it depends on: each component module, its accelerate /
        diffusers hook objects and its first parameter's device. Moving the pipeline (`pipe.to`),
        adding or re-adding offload hooks (the registry re-hooks under --medvram) or swapping a
        component changes the key, and the device is looked up again.
        """
        key = _placement_key(self.pipe)
        cached = self._device_cache
        if key is not None and cached is not None and _same_key(cached[0], key):
            return cached[1]
        device = getattr(self.pipe, "_execution_device", None) or self.pipe.unet.device
        if key is not None:
            self._device_cache = (key, device)
        return device

    @property
    def dtype(self) -> "torch.dtype":
        return self.pipe.unet.dtype

    @property
    def is_inpainting(self) -> bool:
        return self.pipe.unet.config.in_channels == 9

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)


def _placement_key(pipe: Any) -> Optional[tuple]:
    """What a pipeline's execution device depends on, per component module (None: not a diffusers
    pipeline, never cached). The objects themselves are held, so an id is never reused."""
    import torch

    config, attrs = getattr(pipe, "config", None), getattr(pipe, "__dict__", None)
    if config is None or attrs is None:
        return None
    parts = []
    for name in config:  # the registered components (plain attributes: no config look-up warnings)
        module = attrs.get(name)
        if not isinstance(module, torch.nn.Module):
            continue
        param = next(module.parameters(), None)
        parts.append((module, getattr(module, "_hf_hook", None), getattr(module, "_diffusers_hook", None),
                      None if param is None else param.device))
    return tuple(parts)


def _same_key(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        x[0] is y[0] and x[1] is y[1] and x[2] is y[2] and x[3] == y[3] for x, y in zip(a, b))


class ModelProvider(Protocol):
    """What the engine needs from the registry: the model for a request, loaded and ready."""

    def get(self, checkpoint: Optional[str] = None, vae: Optional[str] = None) -> LoadedModel: ...
