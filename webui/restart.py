"""Restarting the server process in place, for "Apply and restart UI".

Extensions are imported once per process (their modules, callbacks and gradio tabs cannot be
unloaded cleanly), so applying a change means a new process. The same process re-executes its own
command line (`sys.orig_argv`): same pid, same flags, same terminal, and a supervisor (systemd, a
test) keeps following it. Before that the queue stops taking jobs and lets the running one end,
and the listening socket (close-on-exec, as Python makes every socket) is freed by the exec.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable

log = logging.getLogger("webui")

RESPONSE_GRACE_S = 0.5  # lets the browser receive "Restarting..." before the server goes away
QUEUE_DRAIN_S = 30.0


def restart_command() -> list[str]:
    """The interpreter and every argument this process was started with."""
    return list(sys.orig_argv) if sys.orig_argv else [sys.executable, *sys.argv]


def process_restarter(stop_services: Callable[[], None]) -> Callable[[], None]:
    """A callable that, once called, stops the services in a background thread and re-executes
    the process (the caller's response goes out first). Called twice, it restarts once."""
    started = threading.Event()

    def run() -> None:
        time.sleep(RESPONSE_GRACE_S)
        try:
            stop_services()
        except Exception:  # noqa: BLE001 - restarting anyway is the user's request
            log.exception("restart: stopping the services failed; restarting anyway")
        command = restart_command()
        log.info("restart: re-executing %s", " ".join(command))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, command)

    def restart() -> None:
        if started.is_set():
            return
        started.set()
        threading.Thread(target=run, name="restart", daemon=True).start()

    return restart
