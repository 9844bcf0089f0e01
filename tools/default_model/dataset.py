"""Procedural training data: one coloured shape on a background of a different colour.

Everything is deterministic given a ``numpy.random.Generator``; nothing touches the network or disk.
Images are drawn 4x supersampled and box-downsampled, so edges are anti-aliased like real images.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# Shapes the base model was never trained on. Only the LoRA trainer (train_lora.py) draws them, to teach the
# model something new; sample_spec never picks them unless asked to. (A new colour does not work: the
# base VAE decodes every colour to one of its eight, see train_lora.py.)
EXTRA_SHAPES: tuple[str, ...] = ("ring",)
RING_HOLE = 0.5  # inner radius / outer radius

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 225, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLORS: tuple[str, ...] = tuple(PALETTE)

IMAGE_SIZE = 64
_SUPERSAMPLE = 4

# Caption templates. The first is the canonical phrasing used by the evaluator.
FULL_TEMPLATES: tuple[str, ...] = (
    "a {fg} {shape} on a {bg} background",
    "a {bg} background with a {fg} {shape}",
    "{fg} {shape}, {bg} background",
    "a {fg} {shape} in front of a {bg} background",
    "a picture of a {fg} {shape} on a {bg} background",
    "{bg} background, {fg} {shape}",
    "a {fg} {shape} on {bg}",
)
PARTIAL_TEMPLATES: tuple[str, ...] = (
    "a {fg} {shape}",
    "a {shape} on a {bg} background",
    "a {fg} shape on a {bg} background",
    "a {shape}",
)


@dataclass(frozen=True)
class SceneSpec:
    shape: str
    fg: str
    bg: str
    size: float  # shape extent as a fraction of the image side
    cx: float  # centre, in [0, 1] image coordinates
    cy: float

    def combo(self) -> tuple[str, str, str]:
        return (self.fg, self.shape, self.bg)


def all_combos() -> list[tuple[str, str, str]]:
    """Every (fg, shape, bg) triple with fg != bg: 8 * 4 * 7 = 224."""
    return [(fg, shape, bg) for shape in SHAPES for fg in COLORS for bg in COLORS if fg != bg]


def fix_articles(text: str) -> str:
    """'a orange' -> 'an orange' (the only colour starting with a vowel)."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def canonical_prompt(fg: str, shape: str, bg: str) -> str:
    return fix_articles(FULL_TEMPLATES[0].format(fg=fg, shape=shape, bg=bg))


def sample_spec(
    rng: np.random.Generator,
    shape: str | None = None,
    fg: str | None = None,
    bg: str | None = None,
    size_range: tuple[float, float] = (0.5, 0.75),
    jitter: float = 0.1,
) -> SceneSpec:
    shape = shape if shape is not None else SHAPES[rng.integers(len(SHAPES))]
    fg = fg if fg is not None else COLORS[rng.integers(len(COLORS))]
    if bg is None:
        choices = [c for c in COLORS if c != fg]
        bg = choices[rng.integers(len(choices))]
    if fg == bg:
        raise ValueError(f"shape colour and background colour must differ, both are {fg!r}")
    size = float(rng.uniform(*size_range))
    # keep the whole shape inside the image
    room = max(0.0, min(jitter, 0.5 - size / 2 - 0.02))
    cx = 0.5 + float(rng.uniform(-room, room))
    cy = 0.5 + float(rng.uniform(-room, room))
    return SceneSpec(shape=shape, fg=fg, bg=bg, size=size, cx=cx, cy=cy)


def _star_points(cx: float, cy: float, r_out: float, r_in: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        r = r_out if i % 2 == 0 else r_in
        a = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def render(spec: SceneSpec, size: int = IMAGE_SIZE) -> Image.Image:
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), PALETTE[spec.bg])
    draw = ImageDraw.Draw(img)
    color = PALETTE[spec.fg]
    cx, cy = spec.cx * big, spec.cy * big
    half = spec.size * big / 2
    if spec.shape == "circle":
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=color)
    elif spec.shape == "square":
        h = half * 0.9  # a square looks bigger than a circle of the same extent
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=color)
    elif spec.shape == "triangle":
        # upright equilateral-ish triangle filling the extent box
        draw.polygon([(cx, cy - half), (cx + half, cy + half * 0.8), (cx - half, cy + half * 0.8)], fill=color)
    elif spec.shape == "star":
        r_out = half * 1.08
        draw.polygon(_star_points(cx, cy + half * 0.08, r_out, r_out * 0.45), fill=color)
    elif spec.shape == "ring":
        r_in = half * RING_HOLE
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=color)
        draw.ellipse([cx - r_in, cy - r_in, cx + r_in, cy + r_in], fill=PALETTE[spec.bg])
    else:
        raise ValueError(f"unknown shape {spec.shape!r}; allowed: {SHAPES + EXTRA_SHAPES}")
    return img.resize((size, size), Image.Resampling.BOX)


@dataclass(frozen=True)
class Caption:
    """A caption and which scene attributes it names (the rest are unknown to a reader of the text)."""

    text: str
    names_fg: bool
    names_shape: bool
    names_bg: bool


def caption(spec: SceneSpec, rng: np.random.Generator, partial_prob: float = 0.1) -> str:
    return labelled_caption(spec, rng, partial_prob).text


def labelled_caption(spec: SceneSpec, rng: np.random.Generator, partial_prob: float = 0.1) -> Caption:
    if rng.random() < partial_prob:
        template = PARTIAL_TEMPLATES[rng.integers(len(PARTIAL_TEMPLATES))]
    else:
        # canonical phrasing a bit more often than the others
        if rng.random() < 0.3:
            template = FULL_TEMPLATES[0]
        else:
            template = FULL_TEMPLATES[rng.integers(len(FULL_TEMPLATES))]
    return Caption(
        text=fix_articles(template.format(fg=spec.fg, shape=spec.shape, bg=spec.bg)),
        names_fg="{fg}" in template,
        names_shape="{shape}" in template,
        names_bg="{bg}" in template,
    )


def to_tensor_array(images: list[Image.Image]) -> np.ndarray:
    """PIL images -> float32 array (N, 3, H, W) in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return (arr / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()


def sample_batch(
    rng: np.random.Generator, batch_size: int, caption_dropout: float = 0.1, partial_prob: float = 0.1
) -> tuple[np.ndarray, list[str], list[SceneSpec]]:
    """A batch of images (N, 3, 64, 64) in [-1, 1], their captions ("" with prob caption_dropout) and specs."""
    specs = [sample_spec(rng) for _ in range(batch_size)]
    images = [render(s) for s in specs]
    captions = []
    for s in specs:
        c = caption(s, rng, partial_prob=partial_prob)
        captions.append("" if rng.random() < caption_dropout else c)
    return to_tensor_array(images), captions, specs
