"""Who can reach the server, and what to say about it at start-up. Torch-free.

--listen, --share and a non-loopback --server-name all expose the server beyond this machine; the
same rule decides whether extension installs from a URL are allowed (modules/extensions/git_install)
and whether start-up warns that no login protects it.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import Optional

from modules.credentials import api_credentials, ui_credentials


def is_loopback(host: Optional[str]) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed(args: argparse.Namespace) -> bool:
    """Reachable from other machines: --listen, --share, or --server-name beyond loopback."""
    return bool(getattr(args, "listen", False) or getattr(args, "share", False)
                or not is_loopback(getattr(args, "server_name", None)))


def _exposing_flags(args: argparse.Namespace) -> str:
    flags = [f for f, on in (("--share", getattr(args, "share", False)), ("--listen", getattr(args, "listen", False)),
                             ("--server-name", not is_loopback(getattr(args, "server_name", None)))) if on]
    return " and ".join(flags)


def startup_warnings(args: argparse.Namespace) -> list[str]:
    """One line per risk the flags leave open (printed by launch.py before anything loads)."""
    warnings: list[str] = []
    nowebui = bool(getattr(args, "nowebui", False))
    if nowebui and getattr(args, "share", False):
        warnings.append("Warning: --share makes a public link for the web UI only; with --nowebui no link is "
                        "made (use --listen to reach the API from other machines).")
    if not exposed(args):
        return warnings
    who = ("anyone with the public link" if getattr(args, "share", False) and not nowebui
           else "anyone on your network")
    if nowebui:
        if not api_credentials(args):
            warnings.append(f"Warning: {_exposing_flags(args)} without --api-auth or --gradio-auth: {who} can use "
                            "the API, change settings and generate. Add --api-auth user:password.")
    elif not ui_credentials(args):
        api = " and the API" if getattr(args, "api", False) and not getattr(args, "api_auth", None) else ""
        warnings.append(f"Warning: {_exposing_flags(args)} without --gradio-auth: {who} can use the web UI{api}, "
                        "change settings and generate. Add --gradio-auth user:password.")
    return warnings


__all__ = ["exposed", "is_loopback", "startup_warnings"]
