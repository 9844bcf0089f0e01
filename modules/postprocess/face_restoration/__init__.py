"""Face restoration: GFPGAN, CodeFormer and RestoreFormer through spandrel, on faces found offline
with OpenCV's Haar cascades. `FaceRestorers` (built by `Postprocessors.face_restorers`) is the
one entry point; nothing here imports torch until a face is restored."""

from modules.postprocess.face_restoration.catalog import RESTORER_NAMES, FaceRestorerName
from modules.postprocess.face_restoration.errors import (
    FaceRestorerLoadError,
    FaceRestorerMissingError,
    UnknownFaceRestorerError,
)
from modules.postprocess.face_restoration.restorers import FaceRestorerInfo, FaceRestorers

__all__ = [
    "FaceRestorerInfo",
    "FaceRestorerLoadError",
    "FaceRestorerMissingError",
    "FaceRestorerName",
    "FaceRestorers",
    "RESTORER_NAMES",
    "UnknownFaceRestorerError",
]
