"""Align a face into the 512x512 crop the restorers were trained on, and paste the result back.

The crop puts the eyes where FFHQ's alignment template has them (the template GFPGAN, CodeFormer
and RestoreFormer were trained with): a similarity transform (scale, rotation, shift) from the two
eye centres. The way back is the inverse transform, blended through a feathered mask that is zero
at the crop's border, so every pixel outside the warped crop is left exactly as it was.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from modules.postprocess.face_restoration.detection import Face

FACE_SIZE = 512
# FFHQ's eye centres in a 512 crop (left, right), from the five-point template of the restorers.
TEMPLATE_EYES = ((192.98138, 239.94708), (318.90277, 240.19360))
# The mask is 0 for this many crop pixels at each border, then rises smoothly over FEATHER pixels.
MASK_INSET = 8
FEATHER = 64


def alignment_matrix(face: Face) -> np.ndarray:
    """2x3 affine matrix from image coordinates to crop coordinates."""
    (lx, ly), (rx, ry) = face.left_eye, face.right_eye
    (tlx, tly), (trx, try_) = TEMPLATE_EYES
    scale = math.hypot(trx - tlx, try_ - tly) / max(math.hypot(rx - lx, ry - ly), 1e-6)
    angle = math.atan2(try_ - tly, trx - tlx) - math.atan2(ry - ly, rx - lx)
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    rotation = np.array([[a, -b], [b, a]])
    src_mid = np.array([(lx + rx) / 2, (ly + ry) / 2])
    dst_mid = np.array([(tlx + trx) / 2, (tly + try_) / 2])
    return np.hstack([rotation, (dst_mid - rotation @ src_mid)[:, None]])


def crop_face(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The aligned FACE_SIZE x FACE_SIZE crop (uint8 RGB); outside the image is mirrored in."""
    import cv2

    return cv2.warpAffine(rgb, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


@lru_cache(maxsize=1)
def feather_mask() -> np.ndarray:
    """FACE_SIZE x FACE_SIZE float32 in [0, 1]: 1 in the middle, a smooth ramp to 0 at the borders."""
    t = np.arange(FACE_SIZE, dtype=np.float64)
    ramp = np.clip((np.minimum(t, FACE_SIZE - 1 - t) - MASK_INSET) / FEATHER, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible edge where the ramp ends
    mask = np.outer(ramp, ramp).astype(np.float32)
    mask.setflags(write=False)
    return mask


def paste_face(target: np.ndarray, restored: np.ndarray, matrix: np.ndarray, strength: float) -> None:
    """Blend `restored` (a float32 crop in 0..255) into `target` (uint8 RGB, changed in place)
    through the feathered mask times `strength`. Only pixels the mask reaches are written."""
    import cv2

    height, width = target.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [FACE_SIZE, 0, 1], [0, FACE_SIZE, 1], [FACE_SIZE, FACE_SIZE, 1]], dtype=np.float64)
    spots = corners @ inverse.T
    x0, y0 = (max(0, math.floor(v) - 1) for v in spots.min(axis=0))
    x1 = min(width, math.ceil(spots[:, 0].max()) + 2)
    y1 = min(height, math.ceil(spots[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    to_region = inverse.copy()
    to_region[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(restored, to_region, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    weight = cv2.warpAffine(feather_mask(), to_region, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) * np.float32(strength)
    region = target[y0:y1, x0:x1]
    blended = region + (face - region) * weight[..., None]
    touched = (weight > 0)[..., None]
    target[y0:y1, x0:x1] = np.where(touched, np.clip(np.rint(blended), 0, 255).astype(np.uint8), region)
