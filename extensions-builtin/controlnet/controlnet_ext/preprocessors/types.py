"""The data every preprocessor module speaks: its sliders, weight files, input and output.

Shapes follow sd-webui-controlnet: a module has at most three sliders, in the order
(resolution, threshold a, threshold b); a position it does not use is None, exactly as
`/controlnet/module_list`'s `module_detail[...]["sliders"]` reports it (e.g. tile_resample:
`[null, {"name": "Down Sampling Rate", ...}]`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

ANNOTATORS = "annotators"      # WeightFile.folder: models/ControlNet-annotators
CLIP_VISION = "clip_vision"    # WeightFile.folder: models/clip_vision


@dataclass(frozen=True)
class Slider:
    """One entry of module_detail's "sliders" (sd-webui-controlnet's shape)."""

    name: str
    value: float
    min: float
    max: float
    step: float = 1.0

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.value, "min": self.min, "max": self.max, "step": self.step}


@dataclass(frozen=True)
class WeightFile:
    """A file a module needs. `relative` is sd-webui-controlnet's downloads layout
    (`hed/ControlNetHED.pth`); the bare file name directly in the folder (lllyasviel/Annotators'
    flat layout) is accepted too. For clip_vision files, `alternatives` lists the other accepted names."""

    folder: str
    relative: str
    source: str = ""                       # where users get it (text only; never fetched)
    alternatives: tuple[str, ...] = ()     # other names accepted for the same file


@dataclass(frozen=True)
class PreprocessInput:
    image: np.ndarray                     # HxWx3 uint8 RGB (HxW gray and HxWx4 RGBA are accepted too)
    resolution: int                       # processor_res: short side of the map; <= 0 = the module's default
    threshold_a: float                    # -1 = the module's default
    threshold_b: float                    # -1 = the module's default
    mask: Optional[np.ndarray] = None     # HxW uint8, 255 = masked (inpaint)
    device: Any = None                    # torch device for modules with weights; None = cpu
    seed: Optional[int] = None            # random modules (shuffle): same seed, same map; None = random


@dataclass
class DetectedMap:
    image: np.ndarray                     # HxWx3 uint8: what the preview shows and, /255, the hint
    hint: Optional[np.ndarray] = None     # float32 HxWxC when the hint differs from image/255
                                          # (inpaint: -1 where masked, as the v1.1 inpaint model wants)


@dataclass(frozen=True)
class PreprocessorEntry:
    name: str                                     # sd-webui-controlnet module name ("canny", "hed")
    run: Callable[[PreprocessInput], DetectedMap]
    sliders: tuple[Optional[Slider], ...] = ()    # (resolution, threshold a, threshold b); None = unused
    weights: tuple[WeightFile, ...] = ()
    aliases: tuple[str, ...] = ()                 # aliases[0] is the UI label ("softedge_hed" for "hed")
    implemented: bool = True                      # False: listed (with its files) but not runnable here

    @property
    def model_free(self) -> bool:
        return not self.weights

    @property
    def label(self) -> str:
        """The name sd-webui-controlnet shows in its UI (module_list?alias_names=true)."""
        return self.aliases[0] if self.aliases else self.name

    def _slider(self, index: int) -> Optional[Slider]:
        return self.sliders[index] if index < len(self.sliders) else None

    @property
    def resolution_slider(self) -> Optional[Slider]:
        return self._slider(0)

    @property
    def threshold_a_slider(self) -> Optional[Slider]:
        return self._slider(1)

    @property
    def threshold_b_slider(self) -> Optional[Slider]:
        return self._slider(2)

    def sliders_json(self) -> list[Optional[dict]]:
        return [s.as_json() if s is not None else None for s in self.sliders]


class UnknownPreprocessorError(ValueError):
    """A module name that is neither a module nor an alias; the message lists the valid ones."""

    def __init__(self, name: str, valid: list[str]) -> None:
        self.name = name
        self.valid = valid
        super().__init__(
            f"Unknown ControlNet preprocessor module {name!r}; valid modules (or their UI labels): {', '.join(valid)}")


class PreprocessorUnavailableError(RuntimeError):
    """A module that cannot run here: its weight files are missing (named, with the folder to put
    them in) or it is listed without an implementation."""

    def __init__(self, name: str, message: str, missing: tuple[Path, ...] = ()) -> None:
        self.name = name
        self.missing = missing
        super().__init__(message)
