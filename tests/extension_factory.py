"""Builds A1111-layout extension folders and git repositories in a temporary folder, for the loader tests."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Optional

GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]


def make_extension(root: Path, name: str, files: Optional[dict[str, str]] = None,
                   metadata: Optional[str] = None) -> Path:
    """root/name with `files` ({relative path: text}, dedented) and an optional metadata.ini."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    if metadata is not None:
        (folder / "metadata.ini").write_text(textwrap.dedent(metadata), encoding="utf-8")
    return folder


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit_all(folder: Path, branch: str = "main", message: str = "first") -> str:
    """`git init` the folder (if needed), commit everything, return the commit's full hash."""
    if not (folder / ".git").exists():
        git(folder, "init", "--quiet", "-b", branch)
    git(folder, "add", "-A")
    git(folder, "commit", "--quiet", "-m", message)
    return git(folder, "rev-parse", "HEAD")


def make_bare_repo(tmp: Path, name: str, files: dict[str, str]) -> tuple[Path, str]:
    """A bare repository `tmp/<name>.git` holding `files` on branch main; returns (path, commit)."""
    work = make_extension(tmp / "work", name, files)
    commit = commit_all(work)
    bare = tmp / f"{name}.git"
    git(tmp, "clone", "--quiet", "--bare", str(work), str(bare))
    return bare, commit
