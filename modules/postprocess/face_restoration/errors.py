"""Face restoration errors. Torch-free; every message names the model, the file or the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

from modules.models.errors import CheckpointError, NoModelError


class FaceRestorerMissingError(NoModelError):
    """The chosen restorer's file is not in its folder. `message` says which file to put where
    (nothing is ever downloaded). The API answers 503 with it, as for a missing checkpoint."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(message)


class FaceRestorerLoadError(CheckpointError):
    """The restorer's file is there but cannot be used: corrupt, truncated, unsafe, or another
    architecture. The message names the file and the reason."""

    def __init__(self, name: str, path: Union[str, Path], reason: str) -> None:
        self.name = name
        self.cause = reason  # without the restorer's name
        super().__init__(path, f"{reason} (face restorer {name})")


class UnknownFaceRestorerError(ValueError):
    """A model name that is none of the restorers."""

    def __init__(self, name: str, valid: Iterable[str], field: str = "face_restoration_model") -> None:
        self.name = name
        self.valid = tuple(valid)
        self.field = field
        super().__init__(f"{field}: unknown face restoration model {name!r}; valid names: {', '.join(self.valid)}")
