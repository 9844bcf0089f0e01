"""--share: a public gradio.live link to the running UI, through gradio's tunnel program (frpc).

gradio's own `launch(share=True)` blocks launch() for up to three 30-second waits (its API server,
the frpc download, the tunnel), prints several lines that name its launch() arguments, and spins
on a dead frpc's output. Here the server starts without it; `ShareTunnel` then takes the same steps
in a background thread under one deadline and ends in exactly one line: the public URL, or why
there is none. The local URL works throughout. Torch-free.

Environment: GRADIO_SHARE_SERVER_ADDRESS=host:port uses your own frp server (as gradio does; the
link is then http); HF_HOME decides where frpc is kept (gradio's place, $HF_HOME/gradio/frpc).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse, urlunparse

log = logging.getLogger(__name__)

SHARE_TIMEOUT_S = 90.0  # API server + frpc download + tunnel, all together
_API_TIMEOUT_S = 20.0
_SUCCESS = re.compile(r"start proxy success: (\S+)")


class ShareError(Exception):
    """Why no link could be made, in words the user can act on."""


@dataclass(frozen=True)
class ShareOutcome:
    url: Optional[str] = None
    reason: Optional[str] = None  # set when url is None

    def line(self, local_url: str) -> str:
        """The one line start-up prints about the link."""
        if self.url:
            return f"Running on public URL: {self.url}"
        return f"Share link could not be created: {self.reason}. The local URL still works: {local_url.rstrip('/')}"


def _die_with_parent() -> None:
    """frpc gets SIGTERM when the thread that started it ends: that thread drains frpc's output for
    the tunnel's whole life and dies with the server, so a killed server leaves no frpc behind."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ShareTunnel:
    """One share link for `local_host:local_port`. `start(on_outcome)` returns at once; `on_outcome`
    runs once, in a background thread, with the link or the reason. `close()` stops the tunnel."""

    def __init__(self, local_host: str, local_port: int, share_token: str, *, timeout_s: float = SHARE_TIMEOUT_S,
                 server_address: Optional[str] = None) -> None:
        # frpc connects to the server: 0.0.0.0 (--listen) is reached on loopback
        self.local_host = "127.0.0.1" if local_host in ("", "0.0.0.0", "::") else local_host
        self.local_port = int(local_port)
        self.share_token = share_token
        self.timeout_s = timeout_s
        self.server_address = server_address if server_address is not None else os.getenv(
            "GRADIO_SHARE_SERVER_ADDRESS")
        self.outcome: Optional[ShareOutcome] = None
        self._result: Optional[ShareOutcome] = None
        self._found = threading.Event()
        self._done = threading.Event()
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self._closed = False

    # -- public

    def start(self, on_outcome: Callable[[ShareOutcome], None]) -> "ShareTunnel":
        threading.Thread(target=self._supervise, args=(on_outcome,), name="share-link", daemon=True).start()
        return self

    def wait(self, timeout: Optional[float] = None) -> Optional[ShareOutcome]:
        self._done.wait(timeout)
        return self.outcome

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- steps

    def _supervise(self, on_outcome: Callable[[ShareOutcome], None]) -> None:
        threading.Thread(target=self._open, name="share-tunnel", daemon=True).start()
        if self._found.wait(self.timeout_s) and self._result is not None:
            outcome = self._result
        else:
            self.close()  # a late frpc must not open a link nobody was told about
            outcome = ShareOutcome(reason=f"no tunnel within {self.timeout_s:g} s (the share server or the frpc "
                                          "download did not answer; check the internet connection)")
        self.outcome = outcome
        self._done.set()
        try:
            on_outcome(outcome)
        except Exception:  # noqa: BLE001 - a printing callback must not hide the outcome
            log.exception("share link: reporting the outcome failed")

    def _open(self) -> None:
        try:
            host, port, certificate = self._server()
            binary = self._binary()
            self._result = ShareOutcome(url=self._run_frpc(binary, host, port, certificate))
        except ShareError as err:
            self._result = ShareOutcome(reason=str(err))
        except Exception as err:  # noqa: BLE001 - any failure is a reason, never a crash of the server
            self._result = ShareOutcome(reason=f"{type(err).__name__}: {err}")
        finally:
            self._found.set()
        self._drain()

    def _server(self) -> tuple[str, int, Optional[str]]:
        """(host, port, TLS root certificate file) of the frp server to connect to."""
        if self.server_address:
            host, _, port = self.server_address.rpartition(":")
            if not host or not port.isdigit():
                raise ShareError(f"GRADIO_SHARE_SERVER_ADDRESS must be host:port, got {self.server_address!r}")
            return host, int(port), None
        import httpx
        from gradio.networking import GRADIO_API_SERVER

        try:
            payload = httpx.get(GRADIO_API_SERVER, timeout=_API_TIMEOUT_S).json()[0]
            host, port, root_ca = payload["host"], int(payload["port"]), payload["root_ca"]
        except Exception as err:  # noqa: BLE001 - DNS, refused, timeout, a changed answer: all say the same
            raise ShareError(f"gradio's share server ({urlparse(GRADIO_API_SERVER).netloc}) could not be reached "
                             f"({_short(err)}); check the internet connection, or a firewall or proxy that "
                             "blocks it") from err
        # gradio writes it to .gradio/ in the working directory, which may be read-only (Docker)
        fd, cert = tempfile.mkstemp(prefix="sd-webui-share-", suffix=".pem")
        with os.fdopen(fd, "w") as f:
            f.write(root_ca)
        return host, port, cert

    def _binary(self) -> str:
        """gradio's frpc, downloaded once into $HF_HOME/gradio/frpc as gradio does."""
        from gradio.exceptions import ChecksumMismatchError
        from gradio.tunneling import BINARY_PATH, BINARY_URL, Tunnel

        if Path(BINARY_PATH).exists():
            return BINARY_PATH
        try:
            Tunnel.download_binary()
        except ChecksumMismatchError as err:
            Path(BINARY_PATH).unlink(missing_ok=True)
            raise ShareError(f"the downloaded tunnel program failed its checksum ({BINARY_URL}); try again, "
                             "or download it by hand") from err
        except Exception as err:  # noqa: BLE001
            raise ShareError(f"the tunnel program frpc is missing ({BINARY_PATH}) and could not be downloaded "
                             f"from {BINARY_URL} ({_short(err)}); check the internet connection, or download "
                             "it by hand to that path and make it executable") from err
        return BINARY_PATH

    def _run_frpc(self, binary: str, host: str, port: int, certificate: Optional[str]) -> str:
        command = [binary, "http", "-n", self.share_token, "-l", str(self.local_port), "-i", self.local_host,
                   "--uc", "--sd", "random", "--ue", "--server_addr", f"{host}:{port}", "--disable_log_color"]
        if certificate:
            command += ["--tls_enable", "--tls_trusted_ca_file", certificate]
        with self._lock:
            if self._closed:
                raise ShareError("the server was stopped before the tunnel started")
            try:
                self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              errors="replace",
                                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            except OSError as err:
                raise ShareError(f"the tunnel program {binary} could not be started ({_short(err)}); delete it "
                                 "so that it is downloaded again") from err
            proc = self._proc
        lines: list[str] = []
        for line in proc.stdout:  # EOF when frpc exits or close() stops it
            lines.append(line.strip())
            if match := _SUCCESS.search(line):
                url = urlparse(match.group(1))
                # gradio's links are https, unless the user's own server (then http), as gradio does
                return urlunparse(("http" if self.server_address else "https",) + tuple(url[1:]))
            if "login to server failed" in line:
                break
        self.close()
        tail = "; ".join(ln for ln in lines[-3:] if ln) or f"it exited with code {proc.wait()}"
        raise ShareError(f"the tunnel to {host}:{port} did not open (frpc: {tail})")

    def _drain(self) -> None:
        """Read frpc's log for the tunnel's life: a full pipe would stall frpc."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            log.debug("frpc: %s", line.rstrip())


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def start_share(local_url: str, local_host: str, local_port: int, share_token: str, *,
                timeout_s: float = SHARE_TIMEOUT_S,
                on_outcome: Optional[Callable[[ShareOutcome], None]] = None) -> ShareTunnel:
    """Start the tunnel; its one line is printed (and `on_outcome` called) when it is up or failed."""

    def report(outcome: ShareOutcome) -> None:
        print(outcome.line(local_url), flush=True)
        if on_outcome is not None:
            on_outcome(outcome)

    return ShareTunnel(local_host, local_port, share_token, timeout_s=timeout_s).start(report)


__all__ = ["SHARE_TIMEOUT_S", "ShareOutcome", "ShareTunnel", "start_share"]
