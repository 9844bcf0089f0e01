"""HTTP Basic auth for the API (`--api-auth user:pass[,user2:pass2]`, else the UI's --gradio-auth
login), and where the API binds.

With credentials set, every API route (and the docs) answers 401 with `WWW-Authenticate: Basic`
unless the request carries one of the pairs; passwords are compared in constant time. The
dependency returns the user name, which becomes the owner of the jobs that user submits.
"""

from __future__ import annotations

import argparse
import secrets
from typing import Callable, Optional, Sequence

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from modules.credentials import api_credentials

_basic = HTTPBasic(auto_error=False, description="--api-auth credentials")


def credentials_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    """--api-auth, or the UI's login when only that is set (modules/credentials.py decides)."""
    return api_credentials(args)


def make_auth_dependency(credentials: Sequence[tuple[str, str]]) -> Optional[Callable]:
    """A FastAPI dependency that enforces the pairs, or None when there are none (auth off)."""
    if not credentials:
        return None
    pairs = [(u.encode("utf-8"), p.encode("utf-8")) for u, p in credentials]

    def require_credentials(given: Optional[HTTPBasicCredentials] = Depends(_basic)) -> str:
        if given is not None:
            user, password = given.username.encode("utf-8"), given.password.encode("utf-8")
            ok = False
            for u, p in pairs:  # check every pair: the time taken does not tell which user exists
                ok |= secrets.compare_digest(user, u) & secrets.compare_digest(password, p)
            if ok:
                return given.username
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return require_credentials


def user_dependency(auth: Optional[Callable]) -> Callable:
    """A dependency giving the caller's user name, or None when the API has no auth (one local
    user: every job is everyone's, as in A1111)."""
    if auth is None:
        def no_user() -> Optional[str]:
            return None

        return no_user
    return auth


def bind_host(args: argparse.Namespace) -> str:
    """127.0.0.1 unless --listen (0.0.0.0) or --server-name says otherwise."""
    name = getattr(args, "server_name", None)
    if name:
        return name
    return "0.0.0.0" if getattr(args, "listen", False) else "127.0.0.1"
