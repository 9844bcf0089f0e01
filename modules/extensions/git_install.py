""""Install from URL": `git clone` an extension into `extensions/`.

Installing runs the extension's code at the next start, so, as in A1111, it is refused when the
server can be reached from beyond this machine unless --enable-insecure-extension-access is given
(`install_allowed`). The URL must be a remote one: https, http, ssh (also `user@host:path`) or git.
`file://`, local paths and git's transport helpers (`ext::`, `fd::`, `<helper>::<address>`) are
refused, and GIT_ALLOW_PROTOCOL makes git itself refuse any other protocol (redirects, submodules).
Tests clone a local bare repository by passing `url_schemes` with "file"; the UI and API never do.

git clones into a hidden temporary folder beside the target and the folder is renamed into place
only once the clone has succeeded, so a failed or stopped clone leaves nothing that would load.
"""

from __future__ import annotations

import argparse
import logging
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Literal, Optional

from modules.extensions.git_info import git_env, read_git_version
from modules.extensions.processes import NEW_GROUP, stop_process_tree
from modules.extensions.types import GitVersion
from modules.remote_access import exposed

log = logging.getLogger(__name__)

CLONE_TIMEOUT_S = 300.0
REMOTE_URL_SCHEMES: frozenset[str] = frozenset({"https", "http", "ssh", "git"})
_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_BRANCH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^:]")  # git@github.com:owner/repo.git

InstallRefusal = Literal["forbidden", "invalid_url", "invalid_name", "invalid_branch", "exists", "clone_failed"]


class InstallFromUrlError(Exception):
    """Why an install was refused or failed; `reason` lets the API pick its status code."""

    def __init__(self, reason: InstallRefusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class InstalledExtension:
    name: str
    path: Path
    version: GitVersion


def install_allowed(args: argparse.Namespace) -> bool:
    """A1111's rule: only when the server listens on loopback alone (no --listen, --share or outside
    --server-name: modules/remote_access.exposed), or the user accepted the risk."""
    return bool(getattr(args, "enable_insecure_extension_access", False)) or not exposed(args)


def check_url(url: str, url_schemes: AbstractSet[str] = REMOTE_URL_SCHEMES) -> str:
    """The URL stripped, or InstallFromUrlError('invalid_url')."""
    url = url.strip()

    def refuse(why: str) -> InstallFromUrlError:
        return InstallFromUrlError("invalid_url", f"url {url!r} is refused: {why}")

    if not url:
        raise refuse("it is empty")
    if url.startswith("-") or any(c.isspace() or ord(c) < 32 for c in url):
        raise refuse("it may not start with '-' or hold spaces or control characters")
    if "::" in url.split("/", 1)[0] or url.lower().startswith(("ext:", "fd:")):
        raise refuse("git transport helpers (ext::, fd::, <helper>::) are not allowed")
    scheme, sep, _ = url.partition("://")
    if sep:
        if scheme.lower() not in url_schemes:
            raise refuse(f"scheme {scheme!r} is not one of {sorted(url_schemes)}")
        return url
    if _SCP_LIKE.match(url) and "ssh" in url_schemes:
        return url
    raise refuse(f"it must be a remote git URL ({', '.join(s + '://' for s in sorted(url_schemes))})")


def folder_name_from_url(url: str) -> str:
    """'https://github.com/owner/sd-webui-x.git' -> 'sd-webui-x', as A1111 names the folder."""
    name = re.split(r"[/:]", url.rstrip("/"))[-1]
    return name[:-4] if name.endswith(".git") else name


def check_folder_name(name: str) -> str:
    if not _FOLDER_NAME.fullmatch(name) or name in (".", ".."):
        raise InstallFromUrlError(
            "invalid_name", f"folder name {name!r} is refused: use letters, digits, '.', '_' and '-' "
            "(at most 128, not starting with '.' or '-')")
    return name


def _taken(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def install_from_url(
    url: str,
    extensions_dir: Path,
    allow: bool,
    *,
    dirname: Optional[str] = None,
    branch: Optional[str] = None,
    timeout: float = CLONE_TIMEOUT_S,
    url_schemes: AbstractSet[str] = REMOTE_URL_SCHEMES,
) -> InstalledExtension:
    """Clones `url` into `extensions_dir/<dirname or the repository's name>`; raises InstallFromUrlError.

    `allow` is `install_allowed(args)`. The new extension loads at the next start.
    """
    if not allow:
        raise InstallFromUrlError(
            "forbidden", "installing extensions is disabled because the server listens beyond this machine "
            "(--listen, --share or --server-name); start it with --enable-insecure-extension-access to allow it")
    url = check_url(url, url_schemes)
    name = check_folder_name(dirname.strip() if dirname and dirname.strip() else folder_name_from_url(url))
    if branch is not None and branch.strip():
        branch = branch.strip()
        if not _BRANCH_NAME.fullmatch(branch) or ".." in branch:
            raise InstallFromUrlError("invalid_branch", f"branch {branch!r} is not a valid branch name")
    else:
        branch = None
    extensions_dir.mkdir(parents=True, exist_ok=True)
    target = extensions_dir / name
    if _taken(target):
        raise InstallFromUrlError("exists", f"extension folder {name!r} already exists")

    temp = extensions_dir / f".installing-{name}-{secrets.token_hex(4)}"
    command = ["git", "clone", "--quiet", *(["--branch", branch] if branch else []), "--", url, str(temp)]
    env = git_env({"GIT_ALLOW_PROTOCOL": ":".join(sorted(url_schemes))})
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")  # fail instead of asking for a password
    log.info("extensions: cloning %s into %s", url, target)
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, encoding="utf-8", errors="replace", env=env, start_new_session=NEW_GROUP)
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_tree(proc)
            raise InstallFromUrlError("clone_failed", f"git clone did not finish in {timeout:g} s") from None
        if proc.returncode != 0:
            raise InstallFromUrlError("clone_failed", f"git clone failed: {stderr.strip()[-2000:]}")
        if _taken(target):  # another install took the name meanwhile
            raise InstallFromUrlError("exists", f"extension folder {name!r} already exists")
        temp.rename(target)
    except OSError as exc:
        raise InstallFromUrlError("clone_failed", f"git clone could not run: {exc}") from exc
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return InstalledExtension(name=name, path=target, version=read_git_version(target))
