"""Loads the extensions once at start-up, in A1111's order, into what the app keeps:

    discover (extensions-builtin/ and the data folder's extensions/, settings and flags applied)
    -> install.py of each (output in the log) -> shared.bind(settings, flags)
    -> import scripts/*.py -> ONE ExtensionSet: the A1111 AlwaysVisible scripts (through their
       adapter) and every typed `JobExtension` subclass a scripts file defines, one instance each

Nothing here stops the app: an extension that fails to install, import or start is listed with
its error (`LoadedExtensions.catalog`, /sdapi/v1/extensions) and the others load.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional

from modules.extensions.a1111_adapter import A1111ScriptExtension, LoadedScripts, load_a1111_scripts
from modules.extensions.discovery import ExtensionSwitches, discover_extensions
from modules.extensions.hooks import AppHandle, ExtensionEnvironment, JobExtension
from modules.extensions.installer import run_installers
from modules.extensions.runner import ExtensionSet
from modules.extensions.selectable import ScriptSet, SelectableScript
from modules.extensions.types import ExtensionCatalog, ExtensionError, ExtensionFile
from modules.paths import EXTENSIONS_BUILTIN_DIR

if TYPE_CHECKING:
    from modules.paths import Paths
    from modules.processing.engine import SavedImage
    from modules.settings import SettingsStore

log = logging.getLogger(__name__)


@dataclass
class LoadedExtensions:
    """What the app keeps of its extensions: what was found, the A1111 scripts, and the set jobs run."""

    catalog: ExtensionCatalog = field(default_factory=lambda: ExtensionCatalog(extensions=[]))
    scripts: LoadedScripts = field(default_factory=LoadedScripts)
    extension_set: ExtensionSet = field(default_factory=ExtensionSet)
    app: AppHandle = field(default_factory=AppHandle)  # what setup() got; create_context fills it in
    # The Script dropdown's typed scripts (X/Y/Z plot, prompt matrix...): SelectableScript subclasses
    selectable: ScriptSet = field(default_factory=ScriptSet)

    @property
    def typed(self) -> list[JobExtension]:
        """The extensions written for this app's typed API (not A1111 scripts)."""
        return [e for e in self.extension_set if not isinstance(e, A1111ScriptExtension)]


def typed_extension_classes(module: ModuleType) -> list[type[JobExtension]]:
    """`JobExtension` subclasses the module itself defines (not imported ones), in definition order."""
    return [c for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, JobExtension) and c is not JobExtension
            and c.__module__ == module.__name__]


def selectable_script_classes(module: ModuleType) -> list[type[SelectableScript]]:
    """`SelectableScript` subclasses the module itself defines, in definition order."""
    return [c for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, SelectableScript) and c is not SelectableScript
            and c.__module__ == module.__name__]


def _add_selectable(catalog: ExtensionCatalog, file: ExtensionFile, module: ModuleType, scripts: ScriptSet,
                    env: ExtensionEnvironment, errors: list[ExtensionError]) -> None:
    owner = catalog.extension_of(file)
    for cls in selectable_script_classes(module):
        try:
            script = cls()
            script.setup(env)
            scripts.add(script)
        except Exception as exc:  # noqa: BLE001 - reported by name; the other scripts load
            error = ExtensionError(owner.name, "import", f"{file.canonical_name}: script {cls.__name__} failed "
                                   f"to start: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            owner.errors.append(error)
            errors.append(error)
            log.error("%s\n%s", error, error.traceback)


def _add_typed(catalog: ExtensionCatalog, file: ExtensionFile, module: ModuleType, extension_set: ExtensionSet,
               errors: list[ExtensionError]) -> None:
    owner = catalog.extension_of(file)
    for cls in typed_extension_classes(module):
        try:
            extension_set.add(cls())
        except Exception as exc:  # noqa: BLE001 - reported by name; the other extensions load
            error = ExtensionError(owner.name, "import", f"{file.canonical_name}: extension {cls.__name__} failed "
                                   f"to start: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            owner.errors.append(error)
            errors.append(error)
            log.error("%s\n%s", error, error.traceback)


def _set_up(extension_set: ExtensionSet, env: ExtensionEnvironment, catalog: ExtensionCatalog,
            errors: list[ExtensionError]) -> None:
    """Each typed extension's `setup`; one that fails is listed by name and left out of the set."""
    for ext in list(extension_set):
        if isinstance(ext, A1111ScriptExtension):
            continue
        try:
            ext.setup(env)
        except Exception as exc:  # noqa: BLE001 - reported by name; the other extensions load
            owner = next((e for e in catalog.extensions
                          if Path(inspect.getfile(type(ext))).resolve().is_relative_to(e.path.resolve())), None)
            error = ExtensionError(owner.name if owner else ext.name, "import",
                                   f"extension {ext.name!r} failed in setup: {type(exc).__name__}: {exc}",
                                   traceback=traceback.format_exc())
            if owner is not None:
                owner.errors.append(error)
            errors.append(error)
            extension_set.remove(ext.name)
            log.error("%s\n%s", error, error.traceback)


def _carry_preload_errors(catalog: ExtensionCatalog, preloaded: Optional[ExtensionCatalog]) -> None:
    """preload.py ran (while the flags were parsed) on an earlier look at the same folders; its
    failures belong in the list the app shows."""
    if preloaded is None:
        return
    for old in preloaded.extensions:
        found = next((e for e in catalog.extensions if e.path == old.path), None)
        if found is not None:
            found.errors[0:0] = [e for e in old.errors if e.stage == "preload"]


def load_extensions(paths: "Paths", settings: "SettingsStore", args: argparse.Namespace, *,
                    preloaded: Optional[ExtensionCatalog] = None,
                    builtin_dir: Optional[Path] = EXTENSIONS_BUILTIN_DIR) -> LoadedExtensions:
    """Discover, install, bind `shared`, import and collect; see the module docstring."""
    from modules import shared

    switches = ExtensionSwitches.from_settings(settings.get(), args)
    catalog = discover_extensions(paths.extensions_dir, builtin_dir, switches)
    _carry_preload_errors(catalog, preloaded)
    run_installers(catalog)
    shared.bind(settings, args)  # before the scripts import: they may read shared.opts at import time
    scripts = load_a1111_scripts(catalog)
    extension_set = ExtensionSet()
    scripts.add_to(extension_set)
    for file, module in scripts.modules:
        _add_typed(catalog, file, module, extension_set, scripts.errors)
    app = AppHandle()
    env = ExtensionEnvironment(paths=paths, args=args, settings=settings, app=app)
    _set_up(extension_set, env, catalog, scripts.errors)
    selectable = ScriptSet()
    for file, module in scripts.modules:
        _add_selectable(catalog, file, module, selectable, env, scripts.errors)
    active = [e.name for e in catalog.active()]
    log.info("extensions: %d loaded (%s), %d job extension(s): %s", len(active), ", ".join(active) or "none",
             len(extension_set), ", ".join(extension_set.names) or "none")
    return LoadedExtensions(catalog=catalog, scripts=scripts, extension_set=extension_set, app=app,
                            selectable=selectable)


def image_saved_observer() -> Callable[["SavedImage"], None]:
    """The engine's `on_image_saved`: A1111's on_image_saved callbacks, with the job's `p`."""
    from modules import script_callbacks
    from modules.extensions.a1111_p import processing_for
    from modules.extensions.a1111_registry import COMPAT
    from modules.infotext import INFOTEXT_KEY

    def on_image_saved(saved: "SavedImage") -> None:
        if not COMPAT.callbacks["image_saved"]:
            return
        p = processing_for(saved.job)
        p.batch_index = saved.image.index % saved.job.request.batch_size
        script_callbacks.image_saved_callback(script_callbacks.ImageSaveParams(
            saved.image.image, p, saved.path, {INFOTEXT_KEY: saved.infotext}))

    return on_image_saved


def app_started(demo: Any, app: Any) -> None:
    """A1111's on_app_started callbacks, once the FastAPI app exists (demo is None without a UI)."""
    from modules import script_callbacks

    script_callbacks.app_started_callback(demo, app)


__all__ = ["LoadedExtensions", "load_extensions", "typed_extension_classes", "selectable_script_classes", "image_saved_observer", "app_started"]
