"""Labelled image grids, A1111's look (X/Y/Z plot, prompt matrix): cells in rows and columns,
column labels above, row labels on the left, black text on white, inactive labels grey and struck
through (the prompt matrix's parts that are off in that row/column).

The font ships with the app (modules/fonts/DejaVuSans.ttf, Bitstream Vera licence beside it), so
labels draw the same offline on every machine. Pure PIL; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

FONT_PATH = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"
TEXT_COLOR = (0, 0, 0)
INACTIVE_COLOR = (153, 153, 153)
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class GridAnnotation:
    """One line of a label; `is_active` False draws it grey and struck through."""

    text: str = ""
    is_active: bool = True


Labels = Sequence[Sequence[GridAnnotation]]  # per column (or row): its lines


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_PATH), max(6, int(size)))


def image_grid(images: Sequence[Image.Image], rows: Optional[int] = None, margin: int = 0,
               background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Tiles of the first image's size, row by row, `margin` pixels between them; `rows` defaults
    to round(sqrt(n)). A cell of another size is resized into its tile."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    n = len(images)
    rows = max(1, min(int(rows if rows else round(math.sqrt(n))), n))
    cols = math.ceil(n / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w + (cols - 1) * margin, rows * h + (rows - 1) * margin), background)
    for i, img in enumerate(images):
        if img.size != (w, h):
            img = img.resize((w, h), Image.LANCZOS)
        grid.paste(img.convert("RGB"), (i % cols * (w + margin), i // cols * (h + margin)))
    return grid


def _wrap(draw: ImageDraw.ImageDraw, text: str, fnt: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (a word longer than the width gets its own line)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate, font=fnt) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _block_height(draw, lines: Sequence[GridAnnotation], fnt, width: int, spacing: int) -> int:
    count = sum(len(_wrap(draw, a.text, fnt, width)) for a in lines)
    return count * (fnt.size + spacing) + spacing


def _draw_block(draw: ImageDraw.ImageDraw, cx: float, top: float, lines: Sequence[GridAnnotation],
                fnt: ImageFont.FreeTypeFont, width: int, spacing: int) -> None:
    """Lines centred on x = cx from y = top."""
    y = top
    for ann in lines:
        color = TEXT_COLOR if ann.is_active else INACTIVE_COLOR
        for text in _wrap(draw, ann.text, fnt, width):
            length = draw.textlength(text, font=fnt)
            x = cx - length / 2
            draw.text((x, y), text, font=fnt, fill=color)
            if not ann.is_active and text:
                mid = y + fnt.size * 0.6
                draw.line((x, mid, x + length, mid), fill=color, width=max(1, fnt.size // 12))
            y += fnt.size + spacing


def draw_annotations(grid: Image.Image, cell_width: int, cell_height: int, hor: Labels, ver: Labels,
                     margin: int = 0) -> Image.Image:
    """`grid` (columns = len(hor), rows = len(ver), `margin` between cells) on a white canvas with
    the column labels above and the row labels on the left. Empty label lists add no border."""
    size = max(10, (cell_width + cell_height) // 25)
    fnt = font(size)
    spacing = max(2, size // 2)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    has_ver = any(a.text for lines in ver for a in lines)
    has_hor = any(a.text for lines in hor for a in lines)
    pad_left = cell_width * 3 // 4 if has_ver else 0
    pad_top = max(_block_height(probe, lines, fnt, cell_width, spacing) for lines in hor) + spacing * 2 \
        if has_hor else 0
    # a row label taller than its cell widens nothing: it is drawn centred and may overflow a little
    canvas = Image.new("RGB", (grid.width + pad_left, grid.height + pad_top), BACKGROUND)
    canvas.paste(grid, (pad_left, pad_top))
    draw = ImageDraw.Draw(canvas)
    if has_hor:
        for col, lines in enumerate(hor):
            cx = pad_left + col * (cell_width + margin) + cell_width / 2
            height = _block_height(draw, lines, fnt, cell_width, spacing)
            _draw_block(draw, cx, (pad_top - height) / 2 + spacing / 2, lines, fnt, cell_width, spacing)
    if has_ver:
        for row, lines in enumerate(ver):
            height = _block_height(draw, lines, fnt, pad_left, spacing)
            top = pad_top + row * (cell_height + margin) + (cell_height - height) / 2 + spacing / 2
            _draw_block(draw, pad_left / 2, top, lines, fnt, pad_left - spacing, spacing)
    return canvas


def labelled_grid(images: Sequence[Image.Image], columns: int, hor: Sequence[str], ver: Sequence[str],
                  margin: int = 0, legend: bool = True) -> Image.Image:
    """The common case: `images` row by row, `columns` per row, one-line labels."""
    rows = max(1, math.ceil(len(images) / max(1, columns)))
    grid = image_grid(images, rows=rows, margin=margin, background=BACKGROUND if margin else (0, 0, 0))
    if not legend:
        return grid
    w, h = images[0].size
    return draw_annotations(grid, w, h, [[GridAnnotation(t)] for t in hor], [[GridAnnotation(t)] for t in ver],
                            margin)


__all__ = ["GridAnnotation", "image_grid", "draw_annotations", "labelled_grid", "font", "FONT_PATH"]
