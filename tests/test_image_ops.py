"""Pixel-space steps: resize modes, masks, 'only masked' crops, fill, compositing; and noise."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from modules.processing import image_ops
from modules.processing.noise import NoiseSpec, create_noise, slerp
from modules.generation.request import InpaintArea, InpaintOptions, MaskedContent, ResizeMode, RngSource


def two_halves(w=128, h=64) -> Image.Image:
    image = Image.new("RGB", (w, h), (255, 0, 0))
    image.paste((0, 0, 255), (w // 2, 0, w, h))
    return image


def test_just_resize_squashes_the_whole_picture():
    out = np.asarray(image_ops.resize_image(two_halves(), 64, 64, ResizeMode.JUST_RESIZE))
    assert out.shape == (64, 64, 3)
    assert tuple(out[32, 5]) == (255, 0, 0) and tuple(out[32, 60]) == (0, 0, 255)


def test_crop_and_resize_keeps_the_centre():
    image = Image.new("RGB", (128, 64), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 32, 64))  # left quarter falls outside the centre crop
    out = np.asarray(image_ops.resize_image(image, 64, 64, ResizeMode.CROP_AND_RESIZE))
    assert out.shape == (64, 64, 3)
    assert (out[:, :, 0] < 10).all()  # no red left


def test_resize_and_fill_stretches_edges_into_the_bands():
    out = np.asarray(image_ops.resize_image(two_halves(), 64, 64, ResizeMode.RESIZE_AND_FILL))
    assert out.shape == (64, 64, 3)
    assert tuple(out[2, 5]) == (255, 0, 0) and tuple(out[61, 60]) == (0, 0, 255)  # top/bottom bands filled


def test_masked_region_adds_padding_and_keeps_aspect():
    mask = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(mask).rectangle((100, 120, 119, 129), fill=255)
    region = image_ops.masked_region(mask, padding=8, target_w=64, target_h=64)
    w, h = region.size
    assert w == h and w >= 20 + 16
    assert region.left <= 92 and region.right >= 128 and region.top <= 112 and region.bottom >= 138
    assert 0 <= region.left and region.right <= 256


def test_alpha_and_inverted_masks():
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    assert np.asarray(image_ops.binary_mask(rgba)).max() == 0  # transparent = keep
    white = Image.new("L", (8, 8), 255)
    assert np.asarray(image_ops.binary_mask(white, invert=True)).max() == 0


def test_fill_paints_the_hole_with_surrounding_colour():
    image = Image.new("RGB", (64, 64), (0, 200, 0))
    image.paste((255, 255, 255), (24, 24, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    filled = np.asarray(image_ops.fill_masked(image, mask), dtype=np.int16)
    assert np.abs(filled[32, 32] - np.array([0, 200, 0])).max() < 20
    assert np.array_equal(filled[0, 0], [0, 200, 0])


def test_only_masked_composite_touches_nothing_outside_the_mask():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    mask = Image.new("L", (96, 96), 0)
    mask.paste(255, (40, 40, 56, 56))
    options = InpaintOptions(mask=mask, mask_blur=4, inpaint_area=InpaintArea.ONLY_MASKED,
                             masked_content=MaskedContent.FILL, only_masked_padding=8)
    prepared = image_ops.prepare_inpaint(image, options, 96, 96, ResizeMode.JUST_RESIZE)
    assert prepared.crop is not None and prepared.image.size == (96, 96)
    painted = image_ops.composite_inpaint(Image.new("RGB", (96, 96), (0, 0, 0)), prepared)
    out, src, m = np.asarray(painted), np.asarray(image), np.asarray(mask)
    assert np.array_equal(out[m == 0], src[m == 0])
    assert (out[46:50, 46:50] <= 30).all()  # the core is (nearly: the blur softens it) repainted


def test_slerp_ends_and_norm():
    a, b = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.randn(
        4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(slerp(0.0, a, b), a, atol=1e-5)
    assert torch.allclose(slerp(1.0, a, b), b, atol=1e-5)
    mid = slerp(0.5, a, b)
    assert abs(mid.std().item() - 1.0) < 0.2  # still unit-variance noise, unlike a linear blend


def test_noise_is_drawn_per_image():
    spec = NoiseSpec(shape=(4, 8, 8), source=RngSource.CPU)
    batch, gens = create_noise(spec, [5, 6], [0, 0], torch.device("cpu"))
    single, _ = create_noise(spec, [6], [0], torch.device("cpu"))
    assert torch.equal(batch[1], single[0]) and len(gens) == 2
    resized, _ = create_noise(NoiseSpec(shape=(4, 8, 8), resize_from=(4, 4), source=RngSource.CPU), [5], [0],
                              torch.device("cpu"))
    small, _ = create_noise(NoiseSpec(shape=(4, 4, 4), source=RngSource.CPU), [5], [0], torch.device("cpu"))
    assert torch.equal(resized[0, :, 2:6, 2:6], small[0])  # the seed's small noise sits in the middle


def test_mask_channel_is_alpha_when_transparent_else_luminance():
    soft = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    soft.putpixel((0, 0), (0, 0, 0, 200))  # a black stroke on a transparent layer still repaints
    assert image_ops.mask_channel(soft).getpixel((0, 0)) == 200
    assert image_ops.mask_channel(soft).getpixel((1, 1)) == 0
    opaque = Image.new("RGBA", (4, 4), (255, 255, 255, 255))
    assert image_ops.mask_channel(opaque).getextrema() == (255, 255)  # no transparency: brightness
    grey = Image.new("L", (4, 4), 77)
    assert image_ops.mask_channel(grey).getextrema() == (77, 77)  # not thresholded here
    la = Image.merge("LA", (Image.new("L", (4, 4), 255), Image.new("L", (4, 4), 0)))
    assert image_ops.mask_channel(la).getextrema() == (0, 0)


def test_binary_mask_threshold():
    mask = Image.new("L", (3, 1))
    mask.putdata([127, 128, 255])
    assert list(image_ops.binary_mask(mask).getdata()) == [0, 255, 255]
    assert list(image_ops.binary_mask(mask, invert=True).getdata()) == [255, 0, 0]


def test_mask_from_layers_takes_every_touched_pixel():
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    layer.putpixel((2, 3), (0, 0, 0, 10))  # faint and black still counts
    big = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    big.paste((255, 255, 255, 255), (12, 12, 16, 16))  # resized to the picture
    mask = image_ops.mask_from_layers([layer, big], (8, 8))
    assert mask.mode == "L" and mask.getpixel((2, 3)) == 255 and mask.getpixel((7, 7)) == 255
    assert mask.getpixel((0, 0)) == 0
    assert image_ops.mask_from_layers([Image.new("RGBA", (8, 8))], (8, 8)) is None
