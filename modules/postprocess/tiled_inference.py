"""Run an image model over a large image in tiles, so memory stays bounded.

Each tile is given `overlap` pixels of real neighbouring image on every side as context, run
through the model, and only its own (un-padded) part of the output is kept (Real-ESRGAN's
`tile_pad` scheme, which A1111 ran with ESRGAN_tile_overlap). When the overlap covers the model's
receptive field the result equals the whole-image result; with less, the difference stays small
and spread out instead of a hard seam. Tiles are laid out evenly, so there is no sliver tile.

Convolutions give the same answer wherever a tile starts; window attention (SwinIR, DAT, HAT...)
and pixel-unshuffle only when the tile's windows line up with the whole image's. So each tile's
context is widened to multiples of `align` (the model's window, or a multiple of it) on both ends.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

# Called after each tile with (tiles done, tiles in all); it may raise to stop (interrupt).
TileProgress = Callable[[int, int], None]


def tile_spans(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) spans covering 0..length with as few tiles of at most `tile` as possible,
    all about the same size."""
    count = max(1, math.ceil(length / tile))
    edges = [round(i * length / count) for i in range(count + 1)]
    return [(edges[i], edges[i + 1]) for i in range(count)]


def tile_count(height: int, width: int, tile: int) -> int:
    if tile <= 0:
        return 1
    return len(tile_spans(height, tile)) * len(tile_spans(width, tile))


@torch.inference_mode()
def run_tiled(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int,
              overlap: int, progress: Optional[TileProgress] = None, align: int = 1) -> torch.Tensor:
    """`model` maps [1, C, h, w] to [1, C', h*scale, w*scale]; `image` is [1, C, H, W].
    `tile` <= 0, or an image no larger than one tile, runs the whole image at once."""
    _, _, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        out = model(image)
        if progress is not None:
            progress(1, 1)
        return out
    overlap = max(0, overlap)
    rows, cols = tile_spans(height, tile), tile_spans(width, tile)
    total = len(rows) * len(cols)
    output: Optional[torch.Tensor] = None
    done = 0
    for y0, y1 in rows:
        for x0, x1 in cols:
            # the tile plus its context, on the model's window grid, clamped to the image
            cy0, cy1 = _context(y0, y1, overlap, align, height)
            cx0, cx1 = _context(x0, x1, overlap, align, width)
            result = model(image[:, :, cy0:cy1, cx0:cx1])
            if output is None:  # channels and dtype come from the model's first answer
                output = result.new_zeros((1, result.shape[1], height * scale, width * scale))
            oy, ox = (y0 - cy0) * scale, (x0 - cx0) * scale
            output[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                result[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
            done += 1
            if progress is not None:
                progress(done, total)
    assert output is not None
    return output


def _context(start: int, end: int, overlap: int, align: int, length: int) -> tuple[int, int]:
    align = max(1, align)
    lo = max(0, start - overlap) // align * align
    hi = min(length, -(-(end + overlap) // align) * align)
    return lo, hi


__all__ = ["TileProgress", "run_tiled", "tile_count", "tile_spans"]
