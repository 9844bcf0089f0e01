"""Deterministic image analyzer for the shapes64 model (numpy only, no project modules).

Given a picture of one shape on a plain background it reports:
- ``bg``: background colour, from the border pixels (median, nearest palette colour);
- ``fg``: foreground colour, the most common nearest-palette colour of the pixels that differ from
  the background (largest connected blob only);
- ``shape``: circle / square / triangle / star (and, when asked for with ``extra_shapes``, ring: a blob
  with a hole, i.e. background pixels it encloses), from simple geometry of that blob: solidity against
  its convex hull (star ~0.6, the convex shapes ~1.0), corner fill (how much of the four corner
  triangles of the bounding box, legs 25% of the sides, is covered: square ~1, triangle ~0.5 (the
  two bottom corners), circle 0) and fill ratio against the bounding box (square ~1.0, circle ~0.79,
  triangle ~0.5). Corner fill is what tells a wobbly hand-drawn-looking square from a circle; both
  can have a fill ratio of ~0.85.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .dataset import PALETTE

_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)

# A pixel belongs to the foreground when it is this far (RGB euclidean) from the background colour.
FG_DISTANCE = 70.0
# Below this share of the image the blob is treated as "no shape".
MIN_AREA_FRACTION = 0.03
STAR_MAX_SOLIDITY = 0.8
SQUARE_MIN_CORNER_FILL = 0.45
SQUARE_MIN_FILL = 0.7
CIRCLE_MIN_FILL = 0.645
CORNER_LEG = 0.25
# A blob that encloses at least this share (of blob + enclosed area) is a ring. Rendered rings enclose
# ~0.2-0.3; the four base shapes enclose nothing.
RING_MIN_HOLE = 0.06


@dataclass(frozen=True)
class Analysis:
    fg: str | None
    bg: str
    shape: str | None
    area_fraction: float
    fill: float  # blob area / bounding-box area
    solidity: float  # blob area / convex-hull area
    corner_fill: float = 0.0  # covered share of the bounding box's four corner triangles
    hole: float = 0.0  # share of the blob's filled outline that is enclosed non-blob pixels


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return np.asarray(image, dtype=np.float32)[..., :3]


def nearest_color(rgb: np.ndarray) -> np.ndarray:
    """Index into the palette of the nearest colour, for an (..., 3) array."""
    d = ((rgb[..., None, :] - _RGB) ** 2).sum(-1)
    return d.argmin(-1)


def color_share(image: Image.Image | np.ndarray, color: str) -> float:
    """Fraction of pixels whose nearest palette colour is ``color``."""
    idx = nearest_color(_as_array(image))
    return float((idx == _NAMES.index(color)).mean())


def border_pixels(arr: np.ndarray, width: int = 2) -> np.ndarray:
    return np.concatenate(
        [arr[:width].reshape(-1, 3), arr[-width:].reshape(-1, 3),
         arr[width:-width, :width].reshape(-1, 3), arr[width:-width, -width:].reshape(-1, 3)]
    )


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (BFS; images are tiny)."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    best, best_size, current = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        current += 1
        labels[y0, x0] = current
        size, queue = 0, deque([(y0, x0)])
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    queue.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else np.zeros_like(mask)


def hole_fraction(blob: np.ndarray) -> float:
    """Share of the blob's filled outline taken by pixels it encloses (not reachable from the border)."""
    outside = ~blob
    reach = np.zeros_like(blob)
    h, w = blob.shape
    queue = deque((y, x) for y in range(h) for x in range(w)
                  if (y in (0, h - 1) or x in (0, w - 1)) and outside[y, x])
    for y, x in queue:
        reach[y, x] = True
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and outside[ny, nx] and not reach[ny, nx]:
                reach[ny, nx] = True
                queue.append((ny, nx))
    enclosed = int((outside & ~reach).sum())
    return enclosed / float(enclosed + blob.sum()) if blob.any() else 0.0


def convex_hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of (N, 2) points (Andrew's monotone chain + shoelace)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1], dtype=np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def corner_fill(blob: np.ndarray) -> float:
    """Covered share of the four corner triangles (legs CORNER_LEG of the sides) of the blob's bbox."""
    ys, xs = np.nonzero(blob)
    box = blob[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = box.shape
    v = (np.arange(h)[:, None] + 0.5) / h
    u = (np.arange(w)[None, :] + 0.5) / w
    corners = ((u + v) < CORNER_LEG) | ((1 - u + v) < CORNER_LEG) | ((u + 1 - v) < CORNER_LEG) | ((2 - u - v) < CORNER_LEG)
    return float(box[corners].mean()) if corners.any() else 0.0


def classify_shape(fill: float, solidity: float, corners: float) -> str:
    if solidity < STAR_MAX_SOLIDITY:
        return "star"
    if corners >= SQUARE_MIN_CORNER_FILL and fill >= SQUARE_MIN_FILL:
        return "square"
    if fill >= CIRCLE_MIN_FILL:
        return "circle"
    return "triangle"


def analyze(image: Image.Image | np.ndarray, extra_shapes: bool = False) -> Analysis:
    """``extra_shapes``: also recognise the LoRA-only shapes (dataset.EXTRA_SHAPES: ring)."""
    arr = _as_array(image)
    bg_rgb = np.median(border_pixels(arr), axis=0)
    bg = _NAMES[int(nearest_color(bg_rgb))]
    mask = np.sqrt(((arr - bg_rgb) ** 2).sum(-1)) > FG_DISTANCE
    blob = largest_component(mask)
    area = int(blob.sum())
    if area < MIN_AREA_FRACTION * blob.size:
        return Analysis(fg=None, bg=bg, shape=None, area_fraction=area / blob.size, fill=0.0, solidity=0.0)
    counts = np.bincount(nearest_color(arr[blob]), minlength=len(_NAMES))
    counts[_NAMES.index(bg)] = 0  # edge pixels can round to the background colour
    fg = _NAMES[int(counts.argmax())]
    ys, xs = np.nonzero(blob)
    fill = area / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    # hull over pixel corners, so a solid block of pixels has solidity exactly 1
    pixel_corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    hull = convex_hull_area(pixel_corners)
    solidity = area / hull if hull > 0 else 0.0
    covered = corner_fill(blob)
    hole = hole_fraction(blob)
    shape = "ring" if extra_shapes and hole >= RING_MIN_HOLE else classify_shape(fill, solidity, covered)
    return Analysis(fg=fg, bg=bg, shape=shape, area_fraction=area / blob.size,
                    fill=fill, solidity=solidity, corner_fill=covered, hole=hole)
