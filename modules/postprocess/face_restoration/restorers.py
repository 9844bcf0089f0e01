"""`FaceRestorers`: which restorers are installed, and restoring the faces of one image.

Per face (A1111's steps, with an offline detector): find it, align it into a 512x512 crop,
restore the crop with the model, warp it back and blend it in through a feathered mask times the
visibility. Pixels that no face's mask reaches stay bit-identical.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from PIL import Image

from modules.postprocess.face_restoration.catalog import RESTORER_NAMES, SPECS, RestorerSpec, probe_file, spec_for
from modules.postprocess.face_restoration.errors import (
    FaceRestorerLoadError,
    FaceRestorerMissingError,
    UnknownFaceRestorerError,
)

if TYPE_CHECKING:
    from modules.postprocess.face_restoration.networks import LoadedRestorer
    from modules.postprocess.services import Postprocessors

_FileKey = tuple[str, int, int]  # path, mtime_ns, size: a replaced file is looked at afresh


@dataclass(frozen=True)
class FaceRestorerInfo:
    name: str
    cmd_dir: str  # the folder the file is looked for in (A1111's field name)
    model_path: Optional[str]  # the file that would be loaded; None when there is none
    usable: bool
    message: Optional[str] = None  # when not usable: the file to put where, or why the file fails


class FaceRestorers:
    def __init__(self, postprocessors: "Postprocessors") -> None:
        self._pp = postprocessors
        self._lock = threading.Lock()  # loading; also guards the two dicts below
        self._loaded: dict[str, tuple[_FileKey, "LoadedRestorer"]] = {}
        self._broken: dict[_FileKey, str] = {}  # the reason each bad file failed (probe or load)

    # ------------------------------------------------------------------ listing
    def items(self) -> list[FaceRestorerInfo]:
        """Every restorer in A1111's order, installed or not (the folders are read on each call,
        so a file dropped in shows up without a restart)."""
        return [self._info(spec) for spec in SPECS]

    def names(self) -> list[str]:
        """The usable restorers' names, in A1111's order."""
        return [info.name for info in self.items() if info.usable]

    def unload(self) -> None:
        """Drop the loaded models (their memory is freed once no restore is using them)."""
        with self._lock:
            self._loaded.clear()

    def _folder(self, spec: RestorerSpec) -> Path:
        return Path(self._pp.paths.model_dir(spec.folder_kind))

    def _info(self, spec: RestorerSpec) -> FaceRestorerInfo:
        folder = self._folder(spec)
        path = spec.find_file(folder)
        if path is None:
            return FaceRestorerInfo(spec.name, str(folder), None, False, spec.missing_message(folder))
        reason = self._known_problem(path)
        message = str(FaceRestorerLoadError(spec.name, path, reason)) if reason else None
        return FaceRestorerInfo(spec.name, str(folder), str(path), reason is None, message)

    def _known_problem(self, path: Path) -> Optional[str]:
        try:
            key = _file_key(path)
        except OSError as exc:  # removed between the listing and now
            return f"unreadable ({exc})"
        with self._lock:
            if key not in self._broken:
                reason = probe_file(path)
                if reason is None:
                    return None
                self._broken[key] = reason
            return self._broken[key]

    # ------------------------------------------------------------------ restoring
    def restore(self, image: Image.Image, model: Optional[str] = None, codeformer_weight: Optional[float] = None,
                visibility: float = 1.0) -> Image.Image:
        """`image` with each face restored by `model` (default: the face_restoration_model
        setting) and blended in at `visibility` (0 = unchanged, 1 = the restored face).
        `codeformer_weight`: CodeFormer's fidelity w (default: the code_former_weight setting;
        0 = the strongest restoration, 1 = closest to the input). An image without faces comes
        back unchanged (as a copy)."""
        options = self._pp.settings.get()
        name = model if model is not None else options.face_restoration_model
        spec = spec_for(name)
        if spec is None:
            raise UnknownFaceRestorerError(name, RESTORER_NAMES)
        weight = float(options.code_former_weight if codeformer_weight is None else codeformer_weight)
        _check_unit("codeformer_weight", weight)
        _check_unit("visibility", visibility)
        if visibility == 0:
            return image.copy()
        net = self._load(spec)

        from modules.postprocess.face_restoration.alignment import alignment_matrix, crop_face, paste_face
        from modules.postprocess.face_restoration.detection import detect_faces

        rgb = np.asarray(image.convert("RGB"))
        faces = detect_faces(rgb)
        if not faces:
            return image.copy()
        result = rgb.copy()
        for face in faces:  # every crop is taken from the original, as facexlib does
            matrix = alignment_matrix(face)
            paste_face(result, net(crop_face(rgb, matrix), weight), matrix, visibility)
        out = Image.fromarray(result, "RGB")
        if image.mode in ("RGBA", "LA", "PA"):
            out.putalpha(image.getchannel("A"))
        out.info = dict(image.info)
        return out

    def _load(self, spec: RestorerSpec) -> "LoadedRestorer":
        folder = self._folder(spec)
        path = spec.find_file(folder)
        if path is None:
            raise FaceRestorerMissingError(spec.name, spec.missing_message(folder))
        reason = self._known_problem(path)
        if reason:
            raise FaceRestorerLoadError(spec.name, path, reason)
        key = _file_key(path)
        with self._lock:
            cached = self._loaded.get(spec.name)
            if cached is not None and cached[0] == key:
                return cached[1]
            from modules.postprocess.face_restoration.networks import load_restorer

            self._loaded.pop(spec.name, None)  # a replaced file: let the old model go first
            try:
                net = load_restorer(spec, path, self._pp.device, self._pp.half)
            except FaceRestorerLoadError as exc:
                self._broken[key] = exc.cause
                raise
            self._loaded[spec.name] = (key, net)
            return net


def _check_unit(field: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{field}: must be a number from 0 to 1, got {value!r}")


def _file_key(path: Path) -> _FileKey:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size
