"""--share and remote access: real launches of launch.py on a loopback port, and the tunnel steps.

There is no internet here, so gradio's share server cannot be reached; the link that does come up
is made by a stand-in frpc (a script at gradio's frpc path, GRADIO_SHARE_SERVER_ADDRESS naming a
server as gradio allows), which prints what the real one prints on success.
"""

from __future__ import annotations

import os
import queue
import stat
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import httpx
import pytest

from modules.cmd_args import parse_args
from modules.remote_access import exposed, startup_warnings
from modules.share_link import ShareOutcome, ShareTunnel
from tests.test_launch import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
SHARE_LINE = "Share link could not be created: "
PUBLIC_LINE = "Running on public URL: "


class Output:
    """launch.py's merged output, read by a thread so that waiting for a line can never hang."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, prefix: str, timeout: float = 120.0) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting {prefix!r}; output:\n" + "\n".join(self.lines[-40:]))

    def rest(self, timeout: float = 30.0) -> list[str]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
        return self.lines


@pytest.fixture()
def launched(tmp_path):
    procs = []

    def start(*flags: str, env: dict[str, str]) -> tuple[str, subprocess.Popen, Output]:
        port = free_port()
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                    "HF_HOME": str(tmp_path / "hf"), **env}
        if "GRADIO_SHARE_SERVER_ADDRESS" not in env:
            full_env.pop("GRADIO_SHARE_SERVER_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--data-dir",
                                 str(tmp_path / "data"), *flags], cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return f"http://127.0.0.1:{port}", proc, Output(proc)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fake_frpc(path: Path, body: str) -> Path:
    """A stand-in for gradio's frpc: writes its arguments and pid beside itself, then `body`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$@" > "{path}.args"\necho $$ > "{path}.pid"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    return not pid_alive(pid)


# -- real launches


def test_share_without_internet_says_why_in_one_line_and_the_local_url_works(launched):
    url, proc, out = launched("--share", env={})
    line = out.until(SHARE_LINE)
    assert "api.gradio.app" in line and "internet" in line and line.endswith(f"The local URL still works: {url}")
    page = wait_for(url + "/", proc)
    assert page.status_code == 200 and proc.poll() is None  # serving on, nothing hangs
    # --share protects like --listen: the Extensions tab refuses installs from a URL
    config = httpx.get(url + "/config", timeout=30).text
    assert "extensions_install_disabled" in config and "--enable-insecure-extension-access" in config
    proc.terminate()
    lines = out.rest()
    text = "\n".join(lines)
    assert sum(ln.startswith(SHARE_LINE) for ln in lines) == 1
    assert PUBLIC_LINE not in text and "share=True" not in text and "launch()" not in text
    assert "gradio deploy" not in text and "To create a public link" not in text
    warning = [ln for ln in lines if ln.startswith("Warning: --share without --gradio-auth")]
    assert len(warning) == 1 and "anyone with the public link" in warning[0]


def test_share_link_comes_up_as_one_line_and_its_tunnel_ends_with_the_server(launched, tmp_path):
    from gradio.tunneling import BINARY_FILENAME

    frpc = fake_frpc(tmp_path / "hf" / "gradio" / "frpc" / BINARY_FILENAME,
                     'echo "2026/12/03 [I] [proxy] [abc] start proxy success: https://fake1234.gradio.live"\n'
                     "exec sleep 300")
    server_port = free_port()
    url, proc, out = launched("--share", "--gradio-auth", "u:p", "--enable-insecure-extension-access",
                              env={"GRADIO_SHARE_SERVER_ADDRESS": f"127.0.0.1:{server_port}"})
    # a user's own frp server (GRADIO_SHARE_SERVER_ADDRESS) serves http, as with gradio's launch()
    assert out.until(PUBLIC_LINE) == f"{PUBLIC_LINE}http://fake1234.gradio.live"
    assert wait_for(url + "/", proc).status_code == 200
    port = url.rsplit(":", 1)[1]
    args = Path(f"{frpc}.args").read_text().split()
    assert args[:1] == ["http"] and args[args.index("-l") + 1] == port and args[args.index("-i") + 1] == "127.0.0.1"
    assert args[args.index("--server_addr") + 1] == f"127.0.0.1:{server_port}"
    frpc_pid = int(Path(f"{frpc}.pid").read_text())
    assert pid_alive(frpc_pid)
    proc.terminate()
    proc.wait(30)
    assert wait_gone(frpc_pid), "frpc outlived the server"
    lines = out.rest()
    text = "\n".join(lines)
    assert sum(PUBLIC_LINE in ln for ln in lines) == 1 and SHARE_LINE not in text
    assert "Warning:" not in text and "share=True" not in text  # a login was given


# -- the tunnel's steps, in this process


@pytest.fixture()
def binary_at(tmp_path, monkeypatch):
    """Point gradio's frpc path (where share_link looks for it) at a file in tmp_path."""
    import gradio.tunneling

    path = tmp_path / "frpc" / "frpc_test"
    monkeypatch.setattr(gradio.tunneling, "BINARY_PATH", str(path))
    return path


def open_tunnel(timeout_s: float = 60.0) -> tuple[ShareTunnel, ShareOutcome]:
    tunnel = ShareTunnel("0.0.0.0", 1, "token", timeout_s=timeout_s, server_address="127.0.0.1:9")
    reported: list[ShareOutcome] = []
    outcome = tunnel.start(reported.append).wait(timeout_s + 30)
    assert outcome is not None and reported == [outcome]
    return tunnel, outcome


def test_missing_frpc_that_cannot_be_downloaded_is_the_reason(binary_at):
    _, outcome = open_tunnel()
    assert outcome.url is None
    assert "frpc is missing" in outcome.reason and str(binary_at) in outcome.reason
    assert "could not be downloaded" in outcome.reason and "internet" in outcome.reason
    assert not binary_at.exists()


def test_frpc_login_failure_is_the_reason(binary_at):
    fake_frpc(binary_at, 'echo "[W] login to server failed: connection refused"\nexit 1')
    _, outcome = open_tunnel()
    assert outcome.url is None and "login to server failed: connection refused" in outcome.reason
    assert outcome.line("http://127.0.0.1:7860/").startswith(SHARE_LINE)
    assert outcome.line("http://127.0.0.1:7860/").endswith("The local URL still works: http://127.0.0.1:7860")


def test_a_tunnel_that_never_answers_is_given_up_and_stopped(binary_at):
    fake_frpc(binary_at, "exec sleep 300")
    tunnel, outcome = open_tunnel(timeout_s=2)
    assert outcome.url is None and outcome.reason.startswith("no tunnel within 2 s")
    assert wait_gone(int(Path(f"{binary_at}.pid").read_text()))
    tunnel.close()


def test_the_tunnel_forwards_loopback_for_listen(binary_at):
    fake_frpc(binary_at, 'echo "start proxy success: https://x.example"\nexec sleep 300')
    tunnel, outcome = open_tunnel()
    try:
        assert outcome == ShareOutcome(url="http://x.example")
        assert outcome.line("http://0.0.0.0:7860") == f"{PUBLIC_LINE}http://x.example"
        args = Path(f"{binary_at}.args").read_text().split()
        assert args[args.index("-i") + 1] == "127.0.0.1" and args[args.index("-n") + 1] == "token"
    finally:
        tunnel.close()
    assert wait_gone(int(Path(f"{binary_at}.pid").read_text()))


# -- warnings and the install guard


@pytest.mark.parametrize("flags, expected", [
    ([], []),
    (["--api"], []),
    (["--listen"], ["Warning: --listen without --gradio-auth: anyone on your network can use the web UI"]),
    (["--share", "--api"], ["Warning: --share without --gradio-auth: anyone with the public link can use the web UI "
                            "and the API"]),
    (["--share", "--listen"], ["Warning: --share and --listen without --gradio-auth"]),
    (["--server-name", "192.168.1.5"], ["Warning: --server-name without --gradio-auth"]),
    (["--share", "--gradio-auth", "u:p"], []),
    (["--listen", "--api", "--api-auth", "a:b"], ["Warning: --listen without --gradio-auth: anyone on your network "
                                                  "can use the web UI, change"]),
    (["--listen", "--nowebui"], ["Warning: --listen without --api-auth or --gradio-auth: anyone on your network can "
                                 "use the API"]),
    (["--listen", "--nowebui", "--api-auth", "a:b"], []),
    (["--share", "--nowebui"], ["Warning: --share makes a public link for the web UI only",
                                "Warning: --share without --api-auth or --gradio-auth"]),
])
def test_startup_warnings(flags, expected):
    warnings = startup_warnings(parse_args(flags))
    assert len(warnings) == len(expected)
    for warning, start in zip(warnings, expected):
        assert warning.startswith(start)
        assert "Add --" in warning or "no link is made" in warning


def test_share_exposes_like_listen():
    assert exposed(parse_args(["--share"])) and exposed(parse_args(["--listen"]))
    assert not exposed(parse_args([])) and not exposed(parse_args(["--server-name", "127.0.0.1"]))
    assert exposed(Namespace(share=True))
