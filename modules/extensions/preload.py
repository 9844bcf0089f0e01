"""Runs each active extension's preload.py, whose `preload(parser)` may add command-line flags,
before the final parse of the flags (A1111's `script_loading.preload_extensions`).

Which extensions are active depends on flags (--disable-all-extensions, --data-dir,
--ui-settings-file) and on the settings file, so the flags known so far are read first with
`parse_known_args`; the extensions' own flags are not known yet and are skipped at that point.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

from modules.extensions.discovery import ExtensionSwitches, discover_extensions
from modules.extensions.script_import import import_extension_file
from modules.extensions.types import ExtensionCatalog, ExtensionError
from modules.paths import EXTENSIONS_BUILTIN_DIR

log = logging.getLogger(__name__)


def run_preloads(catalog: ExtensionCatalog, parser: argparse.ArgumentParser) -> None:
    """Calls preload(parser) of every active extension, in load order; failures are recorded."""
    for ext in catalog.active():
        if ext.preload_script is None:
            continue
        module = import_extension_file(ext, ext.preload_script, stage="preload")
        preload = getattr(module, "preload", None) if module is not None else None
        if not callable(preload):
            continue
        try:
            preload(parser)
        except (Exception, SystemExit) as exc:
            error = ExtensionError(ext.name, "preload", f"preload(parser) failed: {type(exc).__name__}: {exc}",
                                   traceback=traceback.format_exc())
            ext.errors.append(error)
            log.error("%s\n%s", error, error.traceback)


def preload_extensions(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None, *,
                       builtin_dir: Optional[Path] = EXTENSIONS_BUILTIN_DIR) -> ExtensionCatalog:
    """Finds the extensions the flags and settings leave active and runs their preload.py on `parser`.

    Call it on the parser from `modules.cmd_args.build_parser()`, then `parser.parse_args(argv)`.
    """
    from modules.app_factory import build_paths, build_settings

    # -h would print the help and exit before the extensions' flags are added.
    early_argv = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("-h", "--help")]
    known, _ = parser.parse_known_args(early_argv)
    paths = build_paths(known)
    try:
        options = build_settings(known, paths).get()
    except ValueError as exc:  # a broken settings file is reported again, and handled, by the app itself
        log.warning("extensions: settings not read for preload: %s", exc)
        options = None
    catalog = discover_extensions(paths.extensions_dir, builtin_dir,
                                  ExtensionSwitches.from_settings(options, known), read_versions=False)
    run_preloads(catalog, parser)
    return catalog


def parse_args_with_extensions(argv: Optional[Sequence[str]] = None, *,
                               builtin_dir: Optional[Path] = EXTENSIONS_BUILTIN_DIR,
                               ) -> tuple[argparse.Namespace, ExtensionCatalog]:
    """`modules.cmd_args.parse_args` with the extensions' flags added; for launch.py."""
    from modules.cmd_args import build_parser

    parser = build_parser()
    catalog = preload_extensions(parser, argv, builtin_dir=builtin_dir)
    return parser.parse_args(argv), catalog
