"""Runs each active extension's install.py before the extensions load, as A1111's launch does.

Each runs with the app's Python (sys.executable) in a subprocess, in the extension's folder, with the
app's root on PYTHONPATH (A1111's install.py files `import launch`). Its output goes to the log line
by line as it comes; it is stopped after a timeout. A failure is recorded on the extension and the
app goes on: the extension still loads, as in A1111, and lists the error.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Optional

from modules.extensions.processes import NEW_GROUP, stop_process_tree
from modules.extensions.types import Extension, ExtensionCatalog, ExtensionError
from modules.paths import REPO_ROOT

log = logging.getLogger(__name__)

INSTALL_TIMEOUT_S = 600.0
OUTPUT_TAIL_LINES = 40  # kept for the error message when install.py fails


@dataclass(frozen=True)
class InstallResult:
    extension: str
    returncode: Optional[int]  # None when it could not start or was stopped by the timeout
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _installer_env() -> dict[str, str]:
    paths = [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")


def run_installer(extension: Extension, *, python: str = sys.executable,
                  timeout: float = INSTALL_TIMEOUT_S) -> InstallResult:
    script = extension.install_script
    if script is None:
        return InstallResult(extension.name, 0)
    log.info("extension %r: running install.py", extension.name)
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    try:
        proc = subprocess.Popen(
            [python, str(script)], cwd=extension.path, env=_installer_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
            start_new_session=NEW_GROUP)
    except OSError as exc:
        extension.errors.append(ExtensionError(extension.name, "install", f"install.py could not start: {exc}"))
        log.error("%s", extension.errors[-1])
        return InstallResult(extension.name, None)

    def pump() -> None:  # a thread, so the timeout holds even while install.py prints nothing
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.info("[%s install.py] %s", extension.name, line)

    reader = threading.Thread(target=pump, name=f"install-{extension.name}", daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_process_tree(proc)
    reader.join(timeout=5)
    if timed_out:
        message = f"install.py did not finish in {timeout:g} s and was stopped"
    elif proc.returncode != 0:
        message = f"install.py failed with exit code {proc.returncode}"
    else:
        return InstallResult(extension.name, 0)
    error = ExtensionError(extension.name, "install", message, traceback="\n".join(tail))
    extension.errors.append(error)
    log.error("%s", error)
    return InstallResult(extension.name, None if timed_out else proc.returncode, timed_out)


def run_installers(catalog: ExtensionCatalog, *, python: str = sys.executable,
                   timeout: float = INSTALL_TIMEOUT_S) -> list[InstallResult]:
    """install.py of every active extension, in load order."""
    return [run_installer(e, python=python, timeout=timeout)
            for e in catalog.active() if e.install_script is not None]
