"""Moving between PIL images and scaled VAE latents, and cheap previews of a latent."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from PIL import Image

from modules.models.vae_decode import decode_latents, unscale_latents
from modules.processing.vae_modes import vae_memory_modes
from modules.settings import PreviewType

# Linear latent→RGB maps (A1111's "Approx cheap"), for full-size SD VAEs where decoding each
# preview would cost as much as a sampling step.
SD1_LATENT_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                  (-0.2120, -0.2616, -0.7177))
SDXL_LATENT_RGB = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                   (-0.3165, -0.2492, -0.2188))
SMALL_VAE_PARAMS = 5_000_000  # below this a real decode is as cheap as the approximation


def scaling_factor(vae) -> float:
    return float(getattr(vae.config, "scaling_factor", 0.18215))


def pil_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images → [B, 3, H, W] in [-1, 1]."""
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] → RGB PIL images (rounded, as diffusers' image processor does)."""
    arr = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).cpu().numpy()]


def mask_to_tensor(masks: list[Image.Image]) -> torch.Tensor:
    """'L' masks → [B, 1, H, W] in [0, 1]."""
    arrays = [np.asarray(m.convert("L"), dtype=np.float32) / 255.0 for m in masks]
    return torch.from_numpy(np.stack(arrays))[:, None]


@torch.inference_mode()
def encode_images(vae, images: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] → scaled latents. Uses the distribution's mean, so encoding is deterministic."""
    dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    return dist.mean * scaling_factor(vae)


LATENT_RGB_CHANNELS = 4  # the linear maps are for SD1/SD2 and SDXL latents


def approx_cheap_preview(latents: torch.Tensor, family_is_xl: bool, scale: int = 8) -> Image.Image:
    """The first image of a batch of latents through the family's linear latent→RGB map, shown at
    pixel size (each latent pixel becomes a `scale`×`scale` block; the SD and SDXL VAEs the maps
    are for all scale by 8): no model runs."""
    factors = torch.tensor(SDXL_LATENT_RGB if family_is_xl else SD1_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[0].float().cpu(), factors)
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    return Image.fromarray(arr).resize((latents.shape[-1] * scale, latents.shape[-2] * scale),
                                       Image.Resampling.NEAREST)


def full_preview(vae, latents: torch.Tensor, tiling: bool = False, tile_threshold: Optional[int] = None) -> Image.Image:
    """A real VAE decode of the first image of a batch of (diffusion-space) latents, with the job's
    tiling setting and the fp32 retry of the final decode."""
    with vae_memory_modes(vae, tiling=tiling):
        outcome = decode_latents(vae, unscale_latents(vae, latents[:1]), tile_threshold)
    return tensor_to_pil(outcome.images)[0]


def latent_preview(vae, latents: torch.Tensor, family_is_xl: bool, kind: PreviewType = "Approx cheap",
                   tiling: bool = False, tile_threshold: Optional[int] = None) -> Image.Image:
    """A live preview of the first image of a batch of (predicted) latents, as `kind` says.

    "Approx NN" and "TAESD" need small decoder weights this app does not ship: they give the
    "Approx cheap" picture. A small VAE (the embedded model), or latents the linear maps do not
    fit, are decoded for real whatever the kind: that costs no more than the approximation.
    """
    if (kind == "Full" or latents.shape[1] != LATENT_RGB_CHANNELS
            or sum(p.numel() for p in vae.parameters()) < SMALL_VAE_PARAMS):
        return full_preview(vae, latents, tiling=tiling, tile_threshold=tile_threshold)
    return approx_cheap_preview(latents, family_is_xl)
