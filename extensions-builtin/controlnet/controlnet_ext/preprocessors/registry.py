"""Preprocessors: the modules by name or alias, which of their files are missing, and running one
(with -1 settings resolved to the module's defaults). Nets load on first use and stay cached per
(file, device) for the life of this object (the extension holds one)."""

from __future__ import annotations

import dataclasses
import importlib
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from controlnet_ext.preprocessors.catalog import ALL_SPECS, DEFAULT_RESOLUTION, ModuleSpec, NetRun
from controlnet_ext.preprocessors.types import (
    CLIP_VISION,
    DetectedMap,
    PreprocessInput,
    PreprocessorEntry,
    PreprocessorUnavailableError,
    UnknownPreprocessorError,
    WeightFile,
)

_PACKAGE = "controlnet_ext.preprocessors"


@dataclasses.dataclass(frozen=True)
class _ModelFreeRun:
    """Calls model_free.<function>, importing OpenCV only when a module first runs."""

    function: str

    def __call__(self, inp: PreprocessInput) -> DetectedMap:
        return getattr(importlib.import_module(f"{_PACKAGE}.model_free"), self.function)(inp)


class _NetCache:
    """Annotator nets by (weights file, device): built and loaded once, shared by the modules
    that use the same file (softedge_hed and softedge_hedsafe)."""

    def __init__(self) -> None:
        self._nets: dict[tuple[str, str, str, float], Any] = {}
        self._lock = threading.Lock()

    def get(self, run: NetRun, path: Path, device: Any) -> Any:
        import torch

        device = torch.device(device if device is not None else "cpu")
        key = (str(path), str(device), run.builder, path.stat().st_mtime)
        with self._lock:
            net = self._nets.get(key)
            if net is None:
                from controlnet_ext.preprocessors.nets.common import load_into

                module = importlib.import_module(f"{_PACKAGE}.nets.{run.net}")
                net = load_into(getattr(module, run.builder)(), path).to(device)
                self._nets = {k: v for k, v in self._nets.items() if k[:3] != key[:3]}  # drop a replaced file's net
                self._nets[key] = net
            return net


@dataclasses.dataclass(frozen=True)
class _NetModuleRun:
    run: NetRun
    locate: Callable[[WeightFile], Optional[Path]]
    weight: WeightFile
    cache: _NetCache

    def __call__(self, inp: PreprocessInput) -> DetectedMap:
        path = self.locate(self.weight)
        if path is None:  # removed since the registry's check
            raise PreprocessorUnavailableError(self.run.net, f"weights file {self.weight.relative} is missing")
        net = self.cache.get(self.run, path, inp.device)
        module = importlib.import_module(f"{_PACKAGE}.nets.{self.run.net}")
        return getattr(module, self.run.runner)(inp, net, **dict(self.run.options))


def _not_implemented(name: str) -> Callable[[PreprocessInput], DetectedMap]:
    def run(inp: PreprocessInput) -> DetectedMap:
        raise PreprocessorUnavailableError(name, f"ControlNet preprocessor {name!r} is not implemented in this build")

    return run


class Preprocessors:
    def __init__(self, annotator_dir: Path, clip_vision_dir: Path) -> None:
        self.annotator_dir = Path(annotator_dir)
        self.clip_vision_dir = Path(clip_vision_dir)
        self._nets = _NetCache()
        self._entries: dict[str, PreprocessorEntry] = {}
        self._by_any_name: dict[str, PreprocessorEntry] = {}
        for spec in ALL_SPECS:
            entry = self._entry_for(spec)
            self._entries[entry.name] = entry
            for key in (entry.name, *entry.aliases):
                self._by_any_name[key] = entry

    def _entry_for(self, spec: ModuleSpec) -> PreprocessorEntry:
        if spec.model_free_run is not None:
            run: Callable[[PreprocessInput], DetectedMap] = _ModelFreeRun(spec.model_free_run)
        elif spec.net_run is not None:
            run = _NetModuleRun(spec.net_run, self.locate, spec.weights[0], self._nets)
        else:
            run = _not_implemented(spec.name)
        implemented = spec.model_free_run is not None or spec.net_run is not None
        return PreprocessorEntry(spec.name, run, spec.sliders, spec.weights, spec.aliases, implemented)

    # --- listing ---------------------------------------------------------------------------
    def entries(self) -> list[PreprocessorEntry]:
        """"none" first, then by name (as module_list)."""
        rest = sorted((e for e in self._entries.values() if e.name != "none"), key=lambda e: e.name)
        return [self._entries["none"], *rest]

    def names(self, alias_names: bool = False) -> list[str]:
        """module_list: internal names, or with alias_names the UI labels in the same order (so the
        two lists line up, as sd-webui-controlnet's do)."""
        return [entry.label if alias_names else entry.name for entry in self.entries()]

    def entry(self, name: str) -> PreprocessorEntry:
        entry = self._by_any_name.get(name)
        if entry is None:
            folded = {key.lower(): value for key, value in self._by_any_name.items()}
            entry = folded.get(name.lower()) if isinstance(name, str) else None
        if entry is None:
            raise UnknownPreprocessorError(name, self.names())
        return entry

    # --- weight files ----------------------------------------------------------------------
    def folder(self, weight: WeightFile) -> Path:
        return self.clip_vision_dir if weight.folder == CLIP_VISION else self.annotator_dir

    def expected_path(self, weight: WeightFile) -> Path:
        """Where messages tell users to put the file."""
        return self.folder(weight) / weight.relative

    def locate(self, weight: WeightFile) -> Optional[Path]:
        """The file if present: the downloads layout (`hed/ControlNetHED.pth`), the flat name
        (`ControlNetHED.pth`, lllyasviel/Annotators), or one of the accepted alternative names."""
        folder = self.folder(weight)
        names = (weight.relative, Path(weight.relative).name, *weight.alternatives)
        for candidate in (folder / name for name in dict.fromkeys(names)):
            if candidate.is_file():
                return candidate
        return None

    def missing(self, name: str) -> list[Path]:
        return [self.expected_path(w) for w in self.entry(name).weights if self.locate(w) is None]

    def available(self, name: str) -> bool:
        entry = self.entry(name)
        return entry.implemented and not self.missing(name)

    # --- running ---------------------------------------------------------------------------
    def with_defaults(self, entry: PreprocessorEntry, inp: PreprocessInput) -> PreprocessInput:
        """-1 (or any value <= 0 for the resolution) means the module's default, as in the API."""
        resolution_slider = entry.resolution_slider
        resolution = int(inp.resolution) if inp.resolution and inp.resolution > 0 else \
            int(resolution_slider.value if resolution_slider else DEFAULT_RESOLUTION)
        a, b = entry.threshold_a_slider, entry.threshold_b_slider
        threshold_a = a.value if a is not None and (inp.threshold_a is None or inp.threshold_a < 0) else inp.threshold_a
        threshold_b = b.value if b is not None and (inp.threshold_b is None or inp.threshold_b < 0) else inp.threshold_b
        return dataclasses.replace(inp, resolution=resolution, threshold_a=threshold_a, threshold_b=threshold_b)

    def run(self, name: str, inp: PreprocessInput) -> DetectedMap:
        entry = self.entry(name)
        absent = [(self.expected_path(w), w) for w in entry.weights if self.locate(w) is None]
        if not entry.implemented:
            files = ", ".join(str(self.expected_path(w)) for w in entry.weights)
            raise PreprocessorUnavailableError(
                entry.name, f"ControlNet preprocessor {entry.label!r} is not implemented in this build "
                            f"(its weights: {files})", tuple(path for path, _ in absent))
        if absent:
            where = "; ".join(f"put {path.name} at {path}" + (f" (from {w.source})" if w.source else "")
                              for path, w in absent)
            raise PreprocessorUnavailableError(
                entry.name, f"ControlNet preprocessor {entry.label!r} needs weight files that are missing: {where}",
                tuple(path for path, _ in absent),
            )
        return entry.run(self.with_defaults(entry, inp))
