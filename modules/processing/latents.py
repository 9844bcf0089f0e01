"""Moving between PIL images and scaled VAE latents, and cheap previews of a latent."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

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


def latent_preview(vae, latents: torch.Tensor, family_is_xl: bool) -> Image.Image:
    """A quick RGB look at the first image of a batch of (predicted) latents."""
    first = latents[:1]
    if sum(p.numel() for p in vae.parameters()) < SMALL_VAE_PARAMS:
        decoded = vae.decode(first.to(vae.dtype) / scaling_factor(vae), return_dict=False)[0]
        return tensor_to_pil(decoded)[0]
    factors = torch.tensor(SDXL_LATENT_RGB if family_is_xl else SD1_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", first[0].float().cpu(), factors)
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    return Image.fromarray(arr).resize((first.shape[-1] * 8, first.shape[-2] * 8), Image.Resampling.NEAREST)
