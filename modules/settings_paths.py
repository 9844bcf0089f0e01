"""Folder settings changed by a remote client must stay inside the app's data folder.

A folder written in config.json or given as a flag may point anywhere (the machine's owner chose
it); one sent over HTTP (`POST /sdapi/v1/options`) may not, or any client could make the server
write files anywhere it can. Paths are compared fully resolved, so `..` and symlinks that lead
out are caught too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from modules.a1111_options import PATH_OPTIONS
from modules.paths import Paths


def resolve_setting_path(name: str, value: str, paths: Paths) -> Path:
    """Where a folder setting points. Relative output folders are taken inside the outputs folder
    (as modules/outputs.py saves them); other relative folders inside the data folder."""
    base = paths.outputs_dir if name.startswith("outdir_") else paths.data_dir
    return (base / os.path.expanduser(value)).resolve()


def escaping_paths(changes: Mapping[str, Any], paths: Paths) -> dict[str, str]:
    """{setting name: why} for each folder setting in `changes` that would lead outside the data folder."""
    root = paths.data_dir.resolve()
    problems: dict[str, str] = {}
    for name in PATH_OPTIONS:
        value = changes.get(name)
        if not isinstance(value, str) or not value.strip():
            continue  # empty: the default folder, inside the data folder
        if "\x00" in value:
            problems[name] = "a folder name cannot hold a NUL character"
            continue
        target = resolve_setting_path(name, value, paths)
        if not target.is_relative_to(root):
            problems[name] = (f"{value!r} leads to {target}, outside the data folder {root}; folders set over "
                              "the API must stay inside it (set one elsewhere in config.json or in the Settings tab)")
    return problems
