"""HTTP Basic auth for the API (`--api-auth user:pass[,user2:pass2]`), and where the API binds.

With credentials set, every API route (and the docs) answers 401 with `WWW-Authenticate: Basic`
unless the request carries one of the pairs; passwords are compared in constant time.
"""

from __future__ import annotations

import argparse
import secrets
from typing import Callable, Optional, Sequence

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from modules.cmd_args import parse_credentials

_basic = HTTPBasic(auto_error=False, description="--api-auth credentials")


def credentials_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    text = getattr(args, "api_auth", None)
    return parse_credentials(text) if text else []


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


def bind_host(args: argparse.Namespace) -> str:
    """127.0.0.1 unless --listen (0.0.0.0) or --server-name says otherwise."""
    name = getattr(args, "server_name", None)
    if name:
        return name
    return "0.0.0.0" if getattr(args, "listen", False) else "127.0.0.1"
