"""sd-webui-controlnet's preprocessor modules ("annotators"): the weight-free ones run here with
numpy/OpenCV, the ones with weights load their files from models/ControlNet-annotators (CLIP vision
files for the IP-Adapter modules from models/clip_vision) and are listed as unavailable, naming the
file to put where, when those are absent. Heavy imports (cv2, torch) happen when a module runs."""

from controlnet_ext.preprocessors.registry import Preprocessors
from controlnet_ext.preprocessors.types import (
    DetectedMap,
    PreprocessInput,
    PreprocessorEntry,
    PreprocessorUnavailableError,
    Slider,
    UnknownPreprocessorError,
    WeightFile,
)

__all__ = [
    "DetectedMap",
    "PreprocessInput",
    "PreprocessorEntry",
    "PreprocessorUnavailableError",
    "Preprocessors",
    "Slider",
    "UnknownPreprocessorError",
    "WeightFile",
]
