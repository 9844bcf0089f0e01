"""Imports one file of an extension as a module of its own, catching every failure.

As in A1111, the extension's folder is first on `sys.path` while the file runs, so it can import its
own helpers, and the previous `sys.path` is put back afterwards. The module is registered in
`sys.modules` under a unique name (dataclasses and pickle need that); a failed import leaves nothing
there. The failure is recorded on the extension with its traceback, so it is listed with its error
while the other extensions load.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

from modules.extensions.types import ErrorStage, Extension, ExtensionError

log = logging.getLogger(__name__)

MODULE_PREFIX = "sd_extensions"


def module_name_for(extension: Extension, path: Path) -> str:
    """A unique, importable-looking name: sd_extensions.<builtin|user>.<ext>.<subdir>.<stem>."""
    parts = ["builtin" if extension.is_builtin else "user", extension.name,
             *path.relative_to(extension.path).with_suffix("").parts]
    return ".".join([MODULE_PREFIX] + [re.sub(r"\W", "_", p) or "_" for p in parts])


def import_file(path: Path, module_name: str, search_path: Path,
                init_module: Optional[Callable[[ModuleType], None]] = None) -> ModuleType:
    """Executes `path` as module `module_name` with `search_path` first on sys.path; raises on failure.

    `init_module` sees the empty module before its code runs (the A1111 adapter gives it a guarded
    `__import__` there, so that imports of A1111 modules this app lacks fail with a clear message)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    if init_module is not None:
        init_module(module)
    saved_path = sys.path
    sys.modules[module_name] = module
    sys.path = [str(search_path)] + sys.path
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path = saved_path
    return module


def import_extension_file(extension: Extension, path: Path, stage: ErrorStage = "import",
                          init_module: Optional[Callable[[ModuleType], None]] = None) -> Optional[ModuleType]:
    """The module, or None with an ExtensionError (message and traceback) added to `extension.errors`.

    SystemExit is caught too: some scripts call sys.exit() when a dependency is missing.
    """
    try:
        return import_file(path, module_name_for(extension, path), extension.path, init_module)
    except (Exception, SystemExit) as exc:
        error = ExtensionError(
            extension.name, stage,
            f"{path.relative_to(extension.path).as_posix()} failed to import: {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc())
        extension.errors.append(error)
        log.error("%s\n%s", error, error.traceback)
        return None
