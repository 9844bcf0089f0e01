"""The listing, settings and model-management routes; auth; docs; mounting beside another app."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from modules.api import bind_host, mount_api
from modules.cmd_args import parse_args
from modules.processing import samplers
from tests.api.conftest import MODEL_A, MODEL_B, Server


def test_samplers_and_schedulers(client):
    items = client.get("/sdapi/v1/samplers").json()
    assert [i["name"] for i in items] == list(samplers.SAMPLER_NAMES)
    dpm = next(i for i in items if i["name"] == "DPM++ 2M")
    assert "k_dpmpp_2m" in dpm["aliases"] and dpm["options"]["scheduler"] == "karras"
    schedules = client.get("/sdapi/v1/schedulers").json()
    assert {"name": "karras", "label": "Karras"}.items() <= schedules[2].items()
    assert [s["label"] for s in schedules] == list(samplers.SCHEDULE_NAMES)


def test_models_and_vaes(client):
    models = client.get("/sdapi/v1/sd-models").json()
    names = [m["model_name"] for m in models]
    assert MODEL_A in names and MODEL_B in names
    for m in models:
        assert set(m) == {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert m["title"] and m["filename"]
    assert client.get("/sdapi/v1/sd-vae").json() == []
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert client.post("/sdapi/v1/refresh-vae").status_code == 200
    assert [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()] == names


def test_unload_and_reload_checkpoint(client):
    assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
    assert client.post("/sdapi/v1/reload-checkpoint").json() == {}
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "seed": 1})
    assert r.status_code == 200


def test_not_built_yet_lists_are_empty_in_a1111_shapes(client):
    for path in ("face-restorers",):  # upscalers: tests/api/test_upscalers_api.py
        r = client.get(f"/sdapi/v1/{path}")
        assert r.status_code == 200 and r.json() == [], path
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}


def test_built_in_extensions_are_listed_in_a1111_shapes(client):
    """The built-in extensions (LoRA, textual inversion) load on every app; A1111 lists its
    built-in Lora extension the same way."""
    extensions = client.get("/sdapi/v1/extensions").json()
    names = {e["name"] for e in extensions}
    assert {"Lora", "textual-inversion"} <= names
    assert all(set(e) >= {"name", "remote", "branch", "commit_hash", "version", "commit_date", "enabled"}
               for e in extensions)
    info = client.get("/sdapi/v1/script-info").json()
    assert {"lora", "textual inversion"} <= {i["name"] for i in info}
    assert all(set(i) >= {"name", "is_alwayson", "is_img2img", "args"} for i in info)


def test_prompt_styles_memory_flags(client):
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "sunny", "prompt": "{prompt}, sunny day", "negative_prompt": "blurry"}]
    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > 0 and "cuda" in memory
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert flags["port"] == 7860 and flags["use_cpu"] is True and flags["api_auth"] is None
    assert flags["attention"] == "sdpa" and flags["opt_sdp_attention"] is False  # SDPA by default, no flag needed


def test_options_get_and_set(client):
    options = client.get("/sdapi/v1/options").json()
    assert options["samples_format"] == "png" and "sd_model_checkpoint" in options
    try:
        assert client.post("/sdapi/v1/options", json={"jpeg_quality": 90}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["jpeg_quality"] == 90
        bad = client.post("/sdapi/v1/options", json={"jpeg_quality": 1000})
        assert bad.status_code == 422 and "jpeg_quality" in bad.text
        unknown = client.post("/sdapi/v1/options", json={"not_an_option": 1})
        assert unknown.status_code == 422 and "not_an_option" in unknown.text
    finally:
        client.post("/sdapi/v1/options", json={"jpeg_quality": options["jpeg_quality"]})


def test_docs_and_openapi(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower()  # the docs must work offline
    assert "/sdapi-static/swagger-ui/swagger-ui-bundle.js" in page.text
    bundle = client.get("/sdapi-static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    assert client.get("/sdapi-static/swagger-ui/../../../etc/passwd").status_code == 404
    schema = client.get("/openapi.json").json()
    for path in ("txt2img", "img2img", "progress", "png-info", "options", "sd-models", "schedulers"):
        assert f"/sdapi/v1/{path}" in schema["paths"]


def test_auth(auth_server):
    url = auth_server.url
    with httpx.Client(base_url=url, timeout=60) as anon:
        for method, path in [("GET", "/sdapi/v1/samplers"), ("POST", "/sdapi/v1/txt2img"),
                             ("GET", "/sdapi/v1/progress"), ("GET", "/docs"), ("GET", "/openapi.json")]:
            r = anon.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == "Basic"
    with httpx.Client(base_url=url, timeout=60, auth=("alice", "wrong")) as wrong:
        assert wrong.get("/sdapi/v1/samplers").status_code == 401
    with httpx.Client(base_url=url, timeout=60, auth=("bob", "pa:ss")) as bob:
        assert bob.get("/sdapi/v1/samplers").status_code == 200
        assert bob.get("/docs").status_code == 200
    with httpx.Client(base_url=url, timeout=120, auth=("alice", "s3cret")) as alice:
        r = alice.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "seed": 1})
        assert r.status_code == 200
        assert alice.get("/sdapi/v1/cmd-flags").json()["api_auth"] == "********"


def test_mount_api_beside_another_app_with_a_catch_all_route(ctx):
    app = FastAPI(docs_url=None)

    @app.get("/{anything:path}")
    def catch_all(anything: str):
        return {"ui": anything}

    mount_api(app, ctx)
    with Server(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/sdapi/v1/samplers").json()[0]["name"] == samplers.SAMPLER_NAMES[0]
        assert c.get("/somewhere").json() == {"ui": "somewhere"}
        assert c.get("/docs").status_code == 200


@pytest.mark.parametrize("argv, host", [([], "127.0.0.1"), (["--listen"], "0.0.0.0"),
                                        (["--listen", "--server-name", "10.1.2.3"], "10.1.2.3")])
def test_bind_host(argv, host):
    assert bind_host(parse_args(argv)) == host


def test_launch_nowebui_serves_the_api_on_loopback(data_dir):
    """launch.py --nowebui: the API alone, bound to 127.0.0.1 by default, stopped by Ctrl+C."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, str(repo / "launch.py"), "--nowebui", "--port", str(port),
                             "--data-dir", str(data_dir), "--use-cpu"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-2000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/samplers", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the API did not come up"
                time.sleep(0.25)
        assert r.status_code == 200 and r.json()[0]["name"] == samplers.SAMPLER_NAMES[0]
        with socket.socket() as s:  # not on other interfaces: only loopback answers
            s.settimeout(1)
            host_ip = socket.gethostbyname(socket.gethostname())
            if not host_ip.startswith("127."):
                assert s.connect_ex((host_ip, port)) != 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
