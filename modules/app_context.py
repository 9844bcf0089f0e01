"""The handful of long-lived services, built once by launch.py and passed to the UI and the API."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.jobs.queue import JobQueue
from modules.paths import Paths
from modules.settings import SettingsStore

if TYPE_CHECKING:  # the UI must stay torch-free, so the registry type is for checkers only
    from modules.models.registry import ModelRegistry


@dataclass
class AppContext:
    args: argparse.Namespace
    paths: Paths
    settings: SettingsStore
    registry: "ModelRegistry"
    queue: JobQueue
