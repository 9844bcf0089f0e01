"""The extensions launch.py loaded (catalog, A1111 scripts, the engine's ExtensionSet), as the UI
reads them: `ctx.extensions`. A context made without them (older callers) reads as none loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modules.extensions.startup import LoadedExtensions

if TYPE_CHECKING:
    from modules.app_context import AppContext


def loaded_extensions(ctx: "AppContext") -> LoadedExtensions:
    found = getattr(ctx, "extensions", None)
    return found if isinstance(found, LoadedExtensions) else LoadedExtensions()
