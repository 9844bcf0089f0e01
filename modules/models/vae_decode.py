"""Latents to pixels, with A1111's two safety nets: fp32 retry on NaNs, tiling for big images.

`decode_latents` takes latents in the VAE's own space (what `vae.decode` takes: the sampler's
latents already divided by `scaling_factor`; `unscale_latents` does that, honouring shift factors
and latents mean/std where a VAE config has them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

NAN_WARNING = (
    "A tensor with all NaNs was produced in VAE; retried in fp32. "
    "Use --no-half-vae to decode in fp32 from the start."
)
DEFAULT_TILE_THRESHOLD = 1536  # ModelOptions.vae_tile_threshold's default
NAN_AFTER_RETRY = "The VAE produced NaNs even in fp32; NaNs were replaced by 0 (the model or VAE may be broken)."


@dataclass
class DecodeOutcome:
    """`images`: float32, shape (B, C, H, W), values in [-1, 1] (the VAE's range, clamped; map
    with (x + 1) / 2 for [0, 1]). `warning`: set when a retry or repair happened."""

    images: torch.Tensor
    warning: Optional[str] = None
    tiled: bool = False


def _vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def unscale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """From diffusion space (what samplers produce) to the VAE's latent space."""
    cfg = vae.config
    mean, std = cfg.get("latents_mean"), cfg.get("latents_std")
    if mean is not None and std is not None:
        c = latents.shape[1]
        mean_t = torch.tensor(mean, dtype=latents.dtype, device=latents.device).view(1, c, 1, 1)
        std_t = torch.tensor(std, dtype=latents.dtype, device=latents.device).view(1, c, 1, 1)
        return latents * std_t / cfg.scaling_factor + mean_t
    shift = cfg.get("shift_factor") or 0.0
    return latents / cfg.scaling_factor + shift


def _decode(vae, z: torch.Tensor) -> torch.Tensor:
    dtype = vae.dtype
    if getattr(vae, "_hf_hook", None) is None:  # offloaded VAEs move their inputs themselves
        z = z.to(vae.device)
    return vae.decode(z.to(dtype), return_dict=False)[0]


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, tile_threshold: Optional[int] = None) -> DecodeOutcome:
    """Decode VAE-space latents (see module doc) to images in [-1, 1].

    * Tiling: when the decoded width or height exceeds `tile_threshold` pixels (0 = never; None =
      DEFAULT_TILE_THRESHOLD), the VAE decodes in tiles for this call (its previous tiling state is
      restored afterwards).
    * NaNs: when a half-precision VAE returns NaNs, the decode is retried with the VAE in fp32 and
      `warning` says so; the VAE goes back to its dtype afterwards.
    """
    if tile_threshold is None:
        tile_threshold = DEFAULT_TILE_THRESHOLD
    factor = _vae_scale_factor(vae)
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    tiled = bool(tile_threshold) and max(height, width) > tile_threshold
    was_tiling = bool(getattr(vae, "use_tiling", False))
    z = latents.float()
    warning = None
    try:
        if tiled:
            vae.enable_tiling()
        images = _decode(vae, z)
        if torch.isnan(images).any() and vae.dtype in (torch.float16, torch.bfloat16):
            original = vae.dtype
            torch.nn.Module.to(vae, dtype=torch.float32)  # nn.Module.to: diffusers' override only adds a warning
            try:
                images = _decode(vae, z)
            finally:
                torch.nn.Module.to(vae, dtype=original)
            warning = NAN_WARNING
        if torch.isnan(images).any():
            images = torch.nan_to_num(images, nan=0.0)
            warning = f"{warning} {NAN_AFTER_RETRY}" if warning else NAN_AFTER_RETRY
    finally:
        if tiled and not was_tiling:
            vae.disable_tiling()
    return DecodeOutcome(images.float().clamp(-1.0, 1.0), warning, tiled)
