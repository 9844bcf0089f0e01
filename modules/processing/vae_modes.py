"""VAE tiling and slicing (the `vae_tiling` / `vae_slicing` settings), for one decode.

Tiling decodes big latents in overlapping tiles (diffusers' `enable_tiling`: tiles of the VAE's
`sample_size`, blended at the seams), so the decode's peak memory no longer grows with the image;
pixels differ slightly near the seams. Slicing decodes a batch one image at a time
(`enable_slicing`): peak memory of one image, the same pixels as a per-image decode. Both are
switched on for the call only and put back as they were, so the shared model is never left
changed (the automatic tiling above `vae_tile_threshold` in modules/models/vae_decode.py stays).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def vae_memory_modes(vae, tiling: bool = False, slicing: bool = False) -> Iterator[None]:
    was_tiling = bool(getattr(vae, "use_tiling", False))
    was_slicing = bool(getattr(vae, "use_slicing", False))
    try:
        if tiling and not was_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if slicing and not was_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        yield
    finally:
        if tiling and not was_tiling and hasattr(vae, "disable_tiling"):
            vae.disable_tiling()
        if slicing and not was_slicing and hasattr(vae, "disable_slicing"):
            vae.disable_slicing()


__all__ = ["vae_memory_modes"]
