"""The contract between model management and the engine: a loaded model and who hands it out."""

from __future__ import annotations

from dataclasses import dataclass
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

    @property
    def device(self) -> "torch.device":
        """Where computation happens; under CPU offload the weights rest elsewhere."""
        return getattr(self.pipe, "_execution_device", None) or self.pipe.unet.device

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


class ModelProvider(Protocol):
    """What the engine needs from the registry: the model for a request, loaded and ready."""

    def get(self, checkpoint: Optional[str] = None, vae: Optional[str] = None) -> LoadedModel: ...
