"""Offline face detection with the Haar cascades that ship inside OpenCV's wheel (no download).

Each face comes back with two eye centres: the ones the eye cascade found inside the face when
they look like a pair, else where eyes sit in a Haar face box on average (measured on frontal
faces). Alignment then has one input shape either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np

# Detection runs on a copy no longer than this: the cascade's cost grows with the pixel count,
# and faces too small to find at this size are too small to restore (A1111's detector: 640).
DETECT_MAX_SIDE = 1024
MIN_FACE = 24  # px at detection size: the cascade's own window
# Mean eye centres inside a frontal Haar face box, as fractions of its width and height.
EYE_X = (0.28, 0.72)
EYE_Y = 0.37


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x, y, w, h in image pixels
    left_eye: tuple[float, float]  # the eye on the image's left
    right_eye: tuple[float, float]
    eyes_found: bool  # False: eye positions estimated from the box


@lru_cache(maxsize=None)
def _cascade(name: str):
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's Haar cascade {name} is missing from {cv2.data.haarcascades}")
    return cascade


def detect_faces(rgb: np.ndarray) -> list[Face]:
    """Frontal faces in an RGB uint8 image, largest first."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
    if scale < 1.0:
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    faces = []
    for x, y, w, h in sorted(_agreed_boxes(gray), key=lambda b: -b[2] * b[3]):
        found = _find_eyes(gray, x, y, w, h)
        (lx, ly), (rx, ry) = found if found is not None else _average_eyes(x, y, w, h)
        faces.append(Face(box=(x / scale, y / scale, w / scale, h / scale),
                          left_eye=(float(lx) / scale, float(ly) / scale),
                          right_eye=(float(rx) / scale, float(ry) / scale),
                          eyes_found=found is not None))
    return faces


def _average_eyes(x: float, y: float, w: float, h: float) -> tuple[tuple[float, float], tuple[float, float]]:
    return (x + EYE_X[0] * w, y + EYE_Y * h), (x + EYE_X[1] * w, y + EYE_Y * h)


def _agreed_boxes(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes of the default frontal cascade that the stricter alt2 cascade also finds: each alone
    sees faces in coins, cats and cells; the two rarely agree on those (measured on skimage's
    sample photographs)."""
    def boxes(name: str) -> list[tuple[int, int, int, int]]:
        found = _cascade(name).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE))
        return [tuple(int(v) for v in b) for b in found]

    confirming = boxes("haarcascade_frontalface_alt2.xml")
    if not confirming:
        return []
    return [b for b in boxes("haarcascade_frontalface_default.xml") if max(_iou(b, c) for c in confirming) >= 0.4]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _find_eyes(gray: np.ndarray, x: int, y: int, w: int, h: int
               ) -> Optional[tuple[tuple[float, float], tuple[float, float]]]:
    """One eye in each half of the face box's upper part, level enough and a plausible distance
    apart; None when the cascade gives nothing that fits (closed eyes, glasses, profile)."""
    top = gray[y:y + int(h * 0.6), x:x + w]
    found = _cascade("haarcascade_eye.xml").detectMultiScale(
        top, scaleFactor=1.1, minNeighbors=3, minSize=(max(w // 10, 6), max(w // 10, 6)), maxSize=(w // 2, w // 2))
    centres = [(x + float(ex) + ew / 2, y + float(ey) + eh / 2) for ex, ey, ew, eh in found]
    expected = _average_eyes(x, y, w, h)
    mid = x + w / 2
    halves = ([c for c in centres if c[0] < mid], [c for c in centres if c[0] >= mid])
    if not halves[0] or not halves[1]:
        return None
    left, right = (min(half, key=lambda c, e=e: math.dist(c, e)) for half, e in zip(halves, expected))
    distance = math.dist(left, right)
    angle = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    if not (0.25 * w <= distance <= 0.65 * w) or abs(angle) > 30:
        return None
    return left, right
