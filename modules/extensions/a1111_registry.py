"""The A1111 compat layer's one piece of global state, in one object: `COMPAT`.

A1111 extensions register callbacks at import time (`script_callbacks.on_ui_tabs(fn)`), ask for
their folder while loading (`scripts.basedir()`), and read `shared.opts` / `shared.cmd_opts`
whenever they like. Those module-level APIs need somewhere to live; it is here and nowhere else:

- callbacks by kind, each remembered with the extension that registered it (errors name it);
- the extension file being imported right now (for `basedir()` and for naming callbacks);
- the settings store and flags that `shared` reads (set once by `shared.bind` at start-up).

`COMPAT.clear()` resets all of it (tests; a reload of the extensions).
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from modules.paths import REPO_ROOT

if TYPE_CHECKING:
    from modules.settings import SettingsStore

log = logging.getLogger(__name__)

# The callback kinds this app supports, by the name of A1111's `on_*` function.
CALLBACK_KINDS: tuple[str, ...] = ("ui_tabs", "app_started", "image_saved")


@dataclass(frozen=True)
class RegisteredCallback:
    kind: str
    owner: str  # the extension's folder name, or the registering module's name outside an extension
    filename: str  # the file that registered it (A1111's ScriptCallback.script)
    callback: Callable[..., Any]
    name: str  # A1111's "<owner>/<file>/<kind>[/<name>]", made unique


@dataclass(frozen=True)
class LoadingFile:
    """The extension file whose code is running right now."""

    extension: str
    basedir: Path
    path: Path
    module_name: str


class A1111Compat:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.callbacks: dict[str, list[RegisteredCallback]] = {kind: [] for kind in CALLBACK_KINDS}
        self.loading: Optional[LoadingFile] = None
        self.module_owners: dict[str, str] = {}  # extension module name -> extension name
        self.settings_store: Optional["SettingsStore"] = None
        self.cmd_opts: Optional[argparse.Namespace] = None

    # ---- loading
    @contextmanager
    def loading_file(self, file: LoadingFile) -> Iterator[None]:
        """While `file` imports: `basedir()` is its extension's folder and its callbacks are named by it."""
        self.module_owners[file.module_name] = file.extension
        previous, self.loading = self.loading, file
        try:
            yield
        finally:
            self.loading = previous

    def basedir(self) -> str:
        """A1111: the loading extension's folder, else the app's folder (its `paths.script_path`)."""
        return str(self.loading.basedir if self.loading else REPO_ROOT)

    # ---- callbacks
    def _caller(self) -> tuple[str, str]:
        """(owner, filename) of the code that called the compat module's on_* function."""
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") in _COMPAT_MODULES:
            frame = frame.f_back
        if frame is None:
            return "unknown", "unknown file"
        module = frame.f_globals.get("__name__", "")
        filename = frame.f_code.co_filename
        if self.loading is not None and Path(filename) == self.loading.path:
            return self.loading.extension, filename
        return self.module_owners.get(module, module or "unknown"), filename

    def add_callback(self, kind: str, callback: Callable[..., Any], name: Optional[str] = None) -> None:
        if kind not in self.callbacks:
            raise ValueError(f"unknown callback kind {kind!r}; supported: {', '.join(CALLBACK_KINDS)}")
        if not callable(callback):
            raise TypeError(f"on_{kind} needs a function, got {type(callback).__name__}")
        owner, filename = self._caller()
        base = f"{owner}/{Path(filename).name}/{kind}" + (f"/{name}" if name else "")
        taken = {c.name for c in self.callbacks[kind]}
        unique, n = base, 0
        while unique in taken:
            n += 1
            unique = f"{base}-{n}"
        self.callbacks[kind].append(RegisteredCallback(kind, owner, filename, callback, unique))

    def run_callbacks(self, kind: str, *args: Any) -> list[tuple[RegisteredCallback, Any]]:
        """Calls every `kind` callback in registration order; one that raises is logged by its
        extension's name and skipped. Returns (callback, its return value) for those that worked."""
        results = []
        for registered in list(self.callbacks[kind]):
            try:
                results.append((registered, registered.callback(*args)))
            except Exception:  # noqa: BLE001 - an extension's bug must not stop the app
                log.exception("extension %r: %s callback %s failed; skipped", registered.owner, kind,
                              registered.name)
        return results


_COMPAT_MODULES = frozenset({__name__, "modules.script_callbacks"})

COMPAT = A1111Compat()

__all__ = ["COMPAT", "A1111Compat", "CALLBACK_KINDS", "LoadingFile", "RegisteredCallback"]
