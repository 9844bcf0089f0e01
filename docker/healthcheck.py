"""Docker HEALTHCHECK: exit 0 while the server answers, 1 otherwise. Standard library only.

Asks the API's cheapest route (/sdapi/v1/progress); a 401 counts as an answer (a login is set).
Without --api that route is 404, and the page itself is asked instead. The port is WEBUI_PORT, or
the --port given to the container's command (read from PID 1), or 7860.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

ALIVE = (200, 401)


def port() -> int:
    if os.environ.get("WEBUI_PORT"):
        return int(os.environ["WEBUI_PORT"])
    try:
        args = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        args = []
    for flag, value in zip(args, args[1:]):
        if flag == "--port" and value.isdigit():
            return int(value)
    return 7860


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=8) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def main() -> int:
    base = f"http://127.0.0.1:{port()}"
    code = status(base + "/sdapi/v1/progress?skip_current_image=true")
    if code == 404:  # started without --api
        code = status(base + "/")
    if code in ALIVE:
        return 0
    print(f"unhealthy: {base} answered {code or 'nothing'}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
