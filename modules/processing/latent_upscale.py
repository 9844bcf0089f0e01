"""Hires fix's latent upscalers: A1111's latent modes, resizing latents without a VAE round trip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LatentMode:
    interpolation: str  # torch.nn.functional.interpolate's mode
    antialias: bool = False


# A1111's names (shared.latent_upscale_modes), in its order; "Latent" is its default.
LATENT_MODES: dict[str, LatentMode] = {
    "Latent": LatentMode("bilinear"),
    "Latent (antialiased)": LatentMode("bilinear", antialias=True),
    "Latent (bicubic)": LatentMode("bicubic"),
    "Latent (bicubic antialiased)": LatentMode("bicubic", antialias=True),
    "Latent (nearest)": LatentMode("nearest"),
    "Latent (nearest-exact)": LatentMode("nearest-exact"),
}
DEFAULT_LATENT_MODE = "Latent"


def is_latent_mode(name: str) -> bool:
    return name in LATENT_MODES


def upscale_latents(latents: "torch.Tensor", height: int, width: int, mode: str) -> "torch.Tensor":
    """[B, C, h, w] latents -> [B, C, height, width] (latent units) with the named mode."""
    import torch  # deferred: the names above are read by the torch-free web UI

    spec = LATENT_MODES[mode]
    # antialias is only defined for bilinear/bicubic; torch refuses it elsewhere
    return torch.nn.functional.interpolate(latents, size=(height, width), mode=spec.interpolation,
                                           antialias=spec.antialias)


__all__ = ["LATENT_MODES", "DEFAULT_LATENT_MODE", "LatentMode", "is_latent_mode", "upscale_latents"]
