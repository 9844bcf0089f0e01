"""An extension folder's git version, read with the `git` command (no GitPython), with a timeout."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Optional

from modules.extensions.types import GitVersion

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 10.0


def git_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Environment for non-interactive git: never prompt, stable output."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    env.update(extra or {})
    return env


def _git(path: Path, *args: str, timeout: float) -> Optional[str]:
    # The ceiling stops git from walking up to an enclosing repository (e.g. this app's own).
    env = git_env({"GIT_CEILING_DIRECTORIES": str(path.resolve().parent)})
    try:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, env=env,
                              timeout=timeout, stdin=subprocess.DEVNULL, encoding="utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("git %s in %s failed: %s", " ".join(args), path, exc)
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def read_git_version(path: Path, timeout: float = GIT_TIMEOUT_S) -> GitVersion:
    """HEAD's commit, date, branch and origin URL; empty when `path` is not itself a git checkout."""
    if not (path / ".git").exists():
        return GitVersion()
    head = _git(path, "log", "-1", "--format=%H %ct", timeout=timeout)
    if not head:
        return GitVersion()
    commit_hash, _, date = head.partition(" ")
    branch = _git(path, "rev-parse", "--abbrev-ref", "HEAD", timeout=timeout) or ""
    remote = _git(path, "config", "--get", "remote.origin.url", timeout=timeout) or ""
    return GitVersion(
        commit_hash=commit_hash,
        commit_date=int(date) if date.isdigit() else None,
        branch="" if branch == "HEAD" else branch,
        remote=remote,
    )
