"""Subprocesses of the loader (install.py, git) started in their own process group, so a timeout
stops them and everything they started (pip, git-remote-https) instead of leaving orphans."""

from __future__ import annotations

import os
import signal
import subprocess

NEW_GROUP = hasattr(os, "killpg")  # POSIX; on Windows only the direct child is stopped


def stop_process_tree(proc: subprocess.Popen) -> None:
    try:
        if NEW_GROUP:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()
