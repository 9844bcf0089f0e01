"""Finds extensions in `extensions-builtin/` and the user's `extensions/`, with A1111's layout:

    <name>/scripts/*.py  javascript/*.js  javascript/*.mjs  style.css  install.py  preload.py  metadata.ini

Nothing is imported or run here; `discover_extensions` only reads folders, metadata.ini and git.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, get_args

from modules.extensions.git_info import read_git_version
from modules.extensions.metadata import read_metadata
from modules.extensions.ordering import file_canonical_name, order_extensions, order_files, pick_alternative
from modules.extensions.types import (DisableMode, Extension, ExtensionCatalog, ExtensionError, ExtensionFile,
                                      GitVersion)
from modules.paths import EXTENSIONS_BUILTIN_DIR

log = logging.getLogger(__name__)


def _option(options: Any, name: str, default: Any) -> Any:
    """A setting read from a typed field, a pydantic model's extra values or a plain mapping."""
    if options is None:
        return default
    if hasattr(options, name):
        return getattr(options, name)
    if isinstance(options, Mapping):
        return options.get(name, default)
    extra = getattr(options, "model_extra", None)
    return extra.get(name, default) if isinstance(extra, Mapping) else default


@dataclass(frozen=True)
class ExtensionSwitches:
    """Which extensions the user turned off: A1111's settings and flags, read in one place."""

    disabled: frozenset[str] = frozenset()  # the `disabled_extensions` setting: folder names
    mode: DisableMode = "none"

    @classmethod
    def from_settings(cls, options: Any = None, args: Any = None) -> "ExtensionSwitches":
        """From an `Options` (settings) and the parsed flags; either may be None or lack the fields.

        Flags win over the setting, as in A1111: --disable-all-extensions, then the setting's
        "all", then --disable-extra-extensions, then the setting's "extra".
        """
        disabled = _option(options, "disabled_extensions", None) or []
        setting = _option(options, "disable_all_extensions", "none")
        if setting not in get_args(DisableMode):
            log.warning("disable_all_extensions=%r is not one of %s; using 'none'", setting, get_args(DisableMode))
            setting = "none"
        if getattr(args, "disable_all_extensions", False) or setting == "all":
            mode: DisableMode = "all"
        elif getattr(args, "disable_extra_extensions", False) or setting == "extra":
            mode = "extra"
        else:
            mode = "none"
        return cls(disabled=frozenset(str(x) for x in disabled), mode=mode)


def _sorted_files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    # A1111 sorts os.listdir() names as plain strings (so "B.py" before "a.py").
    return [folder / n for n in sorted(p.name for p in folder.iterdir())
            if n.lower().endswith(suffix) and (folder / n).is_file()]


def _optional_file(path: Path) -> Optional[Path]:
    return path if path.is_file() else None


def _extension_folders(roots: Sequence[tuple[Optional[Path], bool]]) -> list[tuple[Path, bool]]:
    found = []
    for root, is_builtin in roots:
        if root is None or not root.is_dir():
            continue
        for name in sorted(p.name for p in root.iterdir()):
            # Hidden folders are skipped: an install from URL clones into one before renaming it.
            if name.startswith(".") or name == "__pycache__" or not (root / name).is_dir():
                continue
            found.append((root / name, is_builtin))
    return found


def read_extension(path: Path, is_builtin: bool, switches: ExtensionSwitches, read_version: bool = True) -> Extension:
    metadata = read_metadata(path)
    ext = Extension(
        name=path.name, path=path, is_builtin=is_builtin, enabled=path.name not in switches.disabled,
        metadata=metadata, version=read_git_version(path) if read_version else GitVersion(),
        stylesheet=_optional_file(path / "style.css"),
        install_script=_optional_file(path / "install.py"),
        preload_script=_optional_file(path / "preload.py"),
    )

    def files(subdir: str, suffix: str) -> tuple[ExtensionFile, ...]:
        return tuple(ExtensionFile(ext.name, file_canonical_name(ext, p.name), p)
                     for p in _sorted_files(path / subdir, suffix))

    ext.scripts = files("scripts", ".py")
    ext.javascript = files("javascript", ".js")
    ext.javascript_modules = files("javascript", ".mjs")
    if metadata.error:
        ext.errors.append(ExtensionError(ext.name, "metadata", metadata.error))
    return ext


def _apply_mode(extensions: Sequence[Extension], mode: DisableMode) -> None:
    if mode == "none":
        return
    for ext in extensions:
        if ext.active and (mode == "all" or not ext.is_builtin):
            ext.disabled_reason = ("all extensions are disabled" if mode == "all"
                                   else "only built-in extensions are enabled") + \
                " (--disable-all-extensions / --disable-extra-extensions or the disable_all_extensions setting)"


def _disable_duplicates(extensions: Sequence[Extension]) -> None:
    """Two extensions answering to one name: the first found (built-in before the user's) wins."""
    owners: dict[str, Extension] = {}
    for ext in extensions:
        clash = next((owners[n] for n in ext.metadata.names if n in owners), None)
        if clash is not None:
            ext.disabled_reason = f"its name clashes with extension {clash.name!r} ({clash.path})"
            ext.errors.append(ExtensionError(ext.name, "duplicate", ext.disabled_reason))
            continue
        for n in ext.metadata.names:
            owners[n] = ext


def _disable_unmet_requirements(extensions: Sequence[Extension]) -> None:
    """An extension whose [Extension] Requires is not loaded does not load either (to a fixed point,
    so a chain A requires B requires missing C stops both)."""
    changed = True
    while changed:
        changed = False
        installed = {n: e for e in extensions for n in e.metadata.names}
        loaded = {n for e in extensions if e.active for n in e.metadata.names}
        for ext in extensions:
            if not ext.active:
                continue
            for requirement in ext.metadata.extension_rules.requires:
                name = pick_alternative(requirement, loaded)
                if name in loaded:
                    continue
                other = next((installed[a] for a in requirement.split("|") if a in installed), None)
                why = (f"requires {requirement!r}, which is not installed" if other is None
                       else f"requires {other.name!r}, which is not loaded"
                       + (f" ({other.disabled_reason})" if other.disabled_reason else " (disabled)"))
                ext.disabled_reason = why
                ext.errors.append(ExtensionError(ext.name, "requires", f"{why}; {ext.name!r} is disabled"))
                changed = True
                break


def discover_extensions(
    user_dir: Optional[Path],
    builtin_dir: Optional[Path] = EXTENSIONS_BUILTIN_DIR,
    switches: ExtensionSwitches = ExtensionSwitches(),
    *,
    read_versions: bool = True,
) -> ExtensionCatalog:
    """Every extension in both folders, which of them load, and their files in load order."""
    if switches.mode != "none":
        log.info("extensions: disable_all_extensions=%s, %s", switches.mode,
                 "none will load" if switches.mode == "all" else "only built-in ones will load")
    found = [read_extension(path, is_builtin, switches, read_versions)
             for path, is_builtin in _extension_folders([(builtin_dir, True), (user_dir, False)])]
    _disable_duplicates(found)
    _apply_mode(found, switches.mode)
    _disable_unmet_requirements(found)
    extensions = order_extensions(found)
    catalog = ExtensionCatalog(
        extensions=extensions,
        mode=switches.mode,
        scripts=order_files(extensions, "scripts", lambda e: e.scripts),
        javascript=order_files(extensions, "javascript", lambda e: e.javascript),
        javascript_modules=order_files(extensions, "javascript", lambda e: e.javascript_modules),
        stylesheets=[e.stylesheet for e in extensions if e.active and e.stylesheet is not None],
    )
    for error in catalog.errors():
        log.error("%s", error)
    return catalog
