"""User settings (A1111's `config.json` options), read once and replaced whole on change.

`SettingsStore` is handed to whoever needs settings; a job takes one `Options` snapshot when it
starts, so a change made in the Settings tab never alters a job half-way.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules.atomic_write import write_json_atomic


class Options(BaseModel):
    """Option names are A1111's, so `/sdapi/v1/options` clients and old config files work."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # model
    sd_model_checkpoint: str = ""
    sd_vae: str = "Automatic"
    sd_checkpoints_limit: int = Field(1, ge=1, le=10)
    CLIP_stop_at_last_layers: int = Field(1, ge=1, le=12)
    randn_source: Literal["GPU", "CPU"] = "GPU"
    # saving
    samples_save: bool = True
    samples_format: Literal["png", "jpg", "jpeg", "webp"] = "png"
    samples_filename_pattern: str = ""
    save_to_dirs: bool = True
    directories_filename_pattern: str = "[date]"
    grid_save: bool = True
    grid_format: Literal["png", "jpg", "jpeg", "webp"] = "png"
    jpeg_quality: int = Field(80, ge=1, le=100)
    outdir_samples: str = ""
    outdir_txt2img_samples: str = ""
    outdir_img2img_samples: str = ""
    outdir_grids: str = ""
    outdir_txt2img_grids: str = ""
    outdir_img2img_grids: str = ""
    # live previews
    live_previews_enable: bool = True
    show_progress_every_n_steps: int = Field(5, ge=0, le=100)
    # defaults for new jobs
    default_sampler: str = "DPM++ 2M"
    default_scheduler: str = "Automatic"
    default_steps: int = Field(20, ge=1, le=150)
    default_cfg_scale: float = Field(7.0, ge=0.0, le=30.0)

    def updated(self, changes: dict[str, Any]) -> "Options":
        """A new Options with `changes` applied and validated; unknown names are an error."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise KeyError(f"unknown option(s): {', '.join(unknown)}")
        return type(self).model_validate({**self.model_dump(), **changes})


class SettingsStore:
    """The current Options plus where they persist; writes are atomic (temp file, then rename)."""

    def __init__(self, path: Optional[Path], initial: Optional[Options] = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Options, Options], None]] = []
        self._options = initial if initial is not None else self._read(path)

    @property
    def path(self) -> Optional[Path]:
        return self._path

    def get(self) -> Options:
        return self._options

    def on_change(self, listener: Callable[[Options, Options], None]) -> None:
        """Called with (old, new) after each successful update, e.g. to apply a checkpoint limit."""
        self._listeners.append(listener)

    def update(self, changes: dict[str, Any]) -> Options:
        with self._lock:
            old = self._options
            new = old.updated(changes)
            if self._path is not None:
                write_json_atomic(self._path, new.model_dump())
            self._options = new
        for listener in self._listeners:
            listener(old, new)
        return new

    @staticmethod
    def _read(path: Optional[Path]) -> Options:
        if path is None or not path.exists():
            return Options()
        try:
            return Options.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
            raise ValueError(f"settings file {path} is not valid: {exc}") from exc

