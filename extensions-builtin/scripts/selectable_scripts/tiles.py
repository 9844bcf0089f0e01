"""Tiles with overlap and their feathered blend (A1111's images.split_grid / combine_grid layout):
the tiles of a row are spread evenly so the first starts at 0 and the last ends at the edge; when
put back, each tile's first `overlap` columns (and each row's first `overlap` lines) fade in
linearly over what is already there, the rest is pasted as it is."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Tile:
    x: int
    y: int
    image: Image.Image


@dataclass
class TileGrid:
    width: int
    height: int
    tile_w: int
    tile_h: int
    overlap: int
    rows: list[list[Tile]] = field(default_factory=list)

    @property
    def tiles(self) -> list[Tile]:
        return [t for row in self.rows for t in row]

    @property
    def columns(self) -> int:
        return len(self.rows[0]) if self.rows else 0


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where each tile starts along one side: ceil((size - overlap) / (tile - overlap)) tiles,
    evenly spaced, the last one flush with the edge."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1)
    return [min(int(i * step), size - tile) for i in range(count)]


def split(image: Image.Image, tile_w: int, tile_h: int, overlap: int) -> TileGrid:
    """Cut `image` into tiles of tile_w x tile_h (each at most the image's size) overlapping by at
    least `overlap` pixels."""
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"the overlap ({overlap}) must be smaller than the tile ({tile_w}x{tile_h})")
    w, h = image.size
    tile_w, tile_h = min(tile_w, w), min(tile_h, h)
    grid = TileGrid(w, h, tile_w, tile_h, overlap)
    for y in starts(h, tile_h, overlap):
        grid.rows.append([Tile(x, y, image.crop((x, y, x + tile_w, y + tile_h)))
                          for x in starts(w, tile_w, overlap)])
    return grid


def _ramp(overlap: int, length: int, horizontal: bool) -> Image.Image:
    line = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    block = np.tile(line[None, :], (length, 1)) if horizontal else np.tile(line[:, None], (1, length))
    return Image.fromarray(block, "L")


def combine(grid: TileGrid) -> Image.Image:
    """The tiles (their images possibly replaced by processed ones of the same size) blended back
    into one image of the grid's size."""
    ov = grid.overlap
    out = Image.new("RGB", (grid.width, grid.height))
    fade_x = _ramp(ov, grid.tile_h, horizontal=True) if ov else None
    fade_y = _ramp(ov, grid.width, horizontal=False) if ov else None
    for row in grid.rows:
        y = row[0].y
        strip = Image.new("RGB", (grid.width, grid.tile_h))
        for tile in row:
            picture = tile.image.convert("RGB")
            if tile.x == 0 or not ov:
                strip.paste(picture, (tile.x, 0))
                continue
            strip.paste(picture.crop((0, 0, ov, grid.tile_h)), (tile.x, 0), mask=fade_x)
            strip.paste(picture.crop((ov, 0, grid.tile_w, grid.tile_h)), (tile.x + ov, 0))
        if y == 0 or not ov:
            out.paste(strip, (0, y))
            continue
        out.paste(strip.crop((0, 0, grid.width, ov)), (0, y), mask=fade_y)
        out.paste(strip.crop((0, ov, grid.width, grid.tile_h)), (0, y + ov))
    return out


__all__ = ["Tile", "TileGrid", "starts", "split", "combine"]
