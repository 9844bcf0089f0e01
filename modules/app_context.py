"""The handful of long-lived services, built once by launch.py and passed to the UI and the API."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from modules.extensions.startup import LoadedExtensions
from modules.jobs.queue import JobQueue
from modules.paths import Paths
from modules.settings import SettingsStore

if TYPE_CHECKING:  # the UI must stay torch-free, so the registry type is for checkers only
    from modules.models.registry import ModelRegistry
    from modules.postprocess.services import Postprocessors


@dataclass
class AppContext:
    args: argparse.Namespace
    paths: Paths
    settings: SettingsStore
    registry: "ModelRegistry"
    queue: JobQueue
    # What the extension loader found (catalog, with errors), the A1111 scripts, and the one
    # ExtensionSet the engine runs jobs with (the API maps alwayson_scripts onto it).
    extensions: LoadedExtensions = field(default_factory=LoadedExtensions)
    # Upscalers, face restorers, the NSFW checker: the same object the engine uses.
    postprocess: Optional["Postprocessors"] = None
