"""The postprocessing services, built once per app (app_factory) and shared by the engine (hires
fix, restore faces, NSFW, watermark), the Extras pipeline, the API and the UI.

Each service is created on first use: scanning model folders and importing spandrel cost nothing
until an upscaler, a face restorer or the checker is asked for. Nothing here imports torch at
import time, so webui/ may hold this object.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from modules.paths import Paths
from modules.settings import SettingsStore

if TYPE_CHECKING:
    from modules.postprocess.face_restoration import FaceRestorers
    from modules.postprocess.safety import SafetyChecker
    from modules.postprocess.upscalers import UpscalerRegistry


class Postprocessors:
    def __init__(self, paths: Paths, settings: SettingsStore, device: Any = None, half: bool = False) -> None:
        """`device`: a torch device or its name; None = CUDA when there is one, else the CPU.
        `half`: run models in fp16 on CUDA where their architecture allows it (not --no-half)."""
        self.paths = paths
        self.settings = settings
        self._device = device
        self.half = half
        self._lock = threading.Lock()
        self._upscalers: Optional["UpscalerRegistry"] = None
        self._face_restorers: Optional["FaceRestorers"] = None
        self._safety: Optional["SafetyChecker"] = None

    @property
    def device(self):
        import torch

        if self._device is None:
            self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self._device)

    def _service(self, attr: str, build: Callable[["Postprocessors"], Any]) -> Any:
        """The service kept in `attr`, built on first use (one build even when threads race)."""
        with self._lock:
            if getattr(self, attr) is None:
                setattr(self, attr, build(self))
            return getattr(self, attr)

    @property
    def upscalers(self) -> "UpscalerRegistry":
        from modules.postprocess.upscalers import UpscalerRegistry

        return self._service("_upscalers", UpscalerRegistry)

    @property
    def face_restorers(self) -> "FaceRestorers":
        from modules.postprocess.face_restoration import FaceRestorers

        return self._service("_face_restorers", FaceRestorers)

    @property
    def safety(self) -> "SafetyChecker":
        from modules.postprocess.safety import SafetyChecker

        return self._service("_safety", SafetyChecker)


__all__ = ["Postprocessors"]
