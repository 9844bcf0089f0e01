"""Who may log in: the one place that reads --gradio-auth, --gradio-auth-path and --api-auth.

The UI and the API both ask here, so a login set for the UI can never leave the API open:
without --api-auth, the API takes the UI's credentials (A1111 leaves it open; a settings write
through POST /options must not be easier than logging in to the page). Torch-free.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modules.cmd_args import parse_credentials

Credentials = list[tuple[str, str]]


def ui_credentials(args: argparse.Namespace) -> Credentials:
    """--gradio-auth "u:p,u2:p2" plus --gradio-auth-path (a file of such lines or lists)."""
    creds: Credentials = []
    if getattr(args, "gradio_auth", None):
        creds += parse_credentials(args.gradio_auth)
    path_flag = getattr(args, "gradio_auth_path", None)
    if path_flag:
        path = Path(path_flag)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SystemExit(f"--gradio-auth-path: cannot read {path}: {exc}") from exc
        creds += parse_credentials(text)
    return creds


def api_credentials(args: argparse.Namespace) -> Credentials:
    """--api-auth when given, else the UI's login (none of either: the API is open)."""
    text = getattr(args, "api_auth", None)
    if text:
        return parse_credentials(text)
    return ui_credentials(args)


__all__ = ["Credentials", "ui_credentials", "api_credentials"]
