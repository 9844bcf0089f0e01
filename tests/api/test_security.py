"""Security and bad input on the real server: the UI's login guards the API too, users cannot see
or stop each other's jobs, and malformed bodies get a 4xx (issue 11, items 1, 3 and 5)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading

import httpx
import pytest

from modules.credentials import api_credentials, ui_credentials
from tests.api.conftest import make_args
from tests.api.helpers import wait_for

ALICE, BOB = ("alice", "s3cret"), ("bob", "pa:ss")  # the auth_server fixture's users
FAST = {"prompt": "x", "steps": 2, "sampler_name": "Euler a", "seed": 1, "send_images": False}
LONG = {"prompt": "slow", "steps": 40, "n_iter": 6, "sampler_name": "Euler", "send_images": False}


# ---------------------------------------------------------------------------------------------
# 1. --gradio-auth without --api-auth: the API takes the UI's login


def test_api_takes_the_ui_login_unless_api_auth_is_given(tmp_path):
    file = tmp_path / "auth.txt"
    file.write_text("dave:pw4\n")
    args = argparse.Namespace(api_auth=None, gradio_auth="carol:pw3", gradio_auth_path=str(file))
    assert ui_credentials(args) == [("carol", "pw3"), ("dave", "pw4")]
    assert api_credentials(args) == [("carol", "pw3"), ("dave", "pw4")]
    args.api_auth = "erin:pw5"
    assert api_credentials(args) == [("erin", "pw5")]
    assert api_credentials(argparse.Namespace(api_auth=None, gradio_auth=None, gradio_auth_path=None)) == []


@pytest.fixture(scope="module")
def ui_with_api(ctx, data_dir):
    """The real gradio app with /sdapi/v1 mounted, as `launch.py --gradio-auth carol:pw3 --api` serves it."""
    from modules.api import mount_api
    from webui.app import launch_ui
    from tests.test_launch import free_port

    port = free_port()
    args = make_args(data_dir, "--gradio-auth", "carol:pw3", "--port", str(port))
    args.nowebui = False
    shared = dataclasses.replace(ctx, args=args)  # the session's queue and registry
    demo = launch_ui(shared, quiet=True, on_app=lambda app: mount_api(app, shared))
    yield f"http://127.0.0.1:{port}"
    demo.close()


def test_gradio_auth_guards_every_api_route_and_the_docs(ui_with_api):
    with httpx.Client(base_url=ui_with_api, timeout=120) as anonymous:
        for method, path, body in [("POST", "/sdapi/v1/txt2img", FAST), ("POST", "/sdapi/v1/options", {}),
                                   ("GET", "/sdapi/v1/options", None), ("GET", "/sdapi/v1/progress", None),
                                   ("POST", "/sdapi/v1/interrupt", None), ("GET", "/docs", None),
                                   ("GET", "/openapi.json", None)]:
            r = anonymous.request(method, path, json=body)
            assert r.status_code == 401, (path, r.status_code, r.text[:200])
            assert r.headers["www-authenticate"] == "Basic"
        wrong = anonymous.post("/sdapi/v1/options", json={}, auth=("carol", "nope"))
        assert wrong.status_code == 401
    with httpx.Client(base_url=ui_with_api, timeout=120, auth=("carol", "pw3")) as logged_in:
        r = logged_in.post("/sdapi/v1/txt2img", json=FAST)
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["seed"] == 1
        assert logged_in.post("/sdapi/v1/options", json={}).status_code == 200
        assert "/sdapi/v1/txt2img" in logged_in.get("/openapi.json").json()["paths"]
        assert logged_in.get("/docs").status_code == 200
        assert logged_in.get("/").status_code in (200, 307)  # the UI itself is still gradio's


# ---------------------------------------------------------------------------------------------
# 3. with several API users, each sees and stops only their own jobs


class Post:
    """One POST in a thread, as a given user."""

    def __init__(self, url: str, path: str, body: dict, auth: tuple[str, str]) -> None:
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._run, args=(url, path, body, auth), daemon=True)
        self.thread.start()

    def _run(self, url, path, body, auth):
        with httpx.Client(base_url=url, timeout=300, auth=auth) as c:
            self.response = c.post(path, json=body)

    def result(self, timeout: float = 300) -> httpx.Response:
        self.thread.join(timeout)
        assert self.response is not None, "the request did not finish"
        return self.response


def test_users_see_and_stop_only_their_own_jobs(auth_server):
    alice = httpx.Client(base_url=auth_server.url, timeout=60, auth=ALICE)
    bob = httpx.Client(base_url=auth_server.url, timeout=60, auth=BOB)
    job = Post(auth_server.url, "/sdapi/v1/txt2img", {**LONG, "force_task_id": "alice-long"}, ALICE)
    try:
        def alice_running():
            body = alice.get("/sdapi/v1/progress").json()
            return body if body["task_id"] == "alice-long" and body["state"]["sampling_step"] >= 1 else None

        wait_for(alice_running)
        # bob's plain /progress shows nothing of alice's job
        seen = bob.get("/sdapi/v1/progress")
        assert seen.status_code == 200
        assert "alice-long" not in seen.text
        assert seen.json()["progress"] == 0 and seen.json()["state"]["job_count"] == 0
        assert seen.json()["current_image"] is None
        # her task id is unknown to him, for every command
        for method, path in [("GET", "/sdapi/v1/progress"), ("POST", "/sdapi/v1/interrupt"),
                             ("POST", "/sdapi/v1/skip")]:
            for key in ("task_id", "id_task"):
                r = bob.request(method, path, params={key: "alice-long"})
                assert r.status_code == 404, (path, key, r.text)
        # his plain interrupt and skip do not touch her job
        assert bob.post("/sdapi/v1/interrupt").status_code == 200
        assert bob.post("/sdapi/v1/skip").status_code == 200
        mine = alice.get("/sdapi/v1/progress", params={"task_id": "alice-long"}).json()
        assert mine["status"] == "running"
        assert mine["state"]["interrupted"] is False and mine["state"]["skipped"] is False
        # hers does
        assert alice.post("/sdapi/v1/interrupt").status_code == 200
        response = job.result()
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert info["interrupted"] is True and len(info["all_seeds"]) < 6
    finally:
        alice.post("/sdapi/v1/interrupt", params={"task_id": "alice-long"})
        alice.close()
        bob.close()


# ---------------------------------------------------------------------------------------------
# 5. bodies that used to be a 500


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_lone_surrogate_is_422_naming_the_field(client, field):
    raw = '{"%s": "a\\ud800b", "steps": 1, "sampler_name": "Euler"}' % field
    r = client.post("/sdapi/v1/txt2img", content=raw.encode("ascii"), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert f"body.{field}" in [".".join(str(p) for p in e["loc"]) for e in r.json()["detail"]]
    assert client.get("/sdapi/v1/samplers").status_code == 200


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_every_front_end_gets_a_clear_message_for_a_lone_surrogate(field):
    from pydantic import ValidationError

    from modules.generation.request import GenerationRequest

    with pytest.raises(ValidationError) as caught:
        GenerationRequest(**{field: "a\ud800b"})
    error, = caught.value.errors()
    assert error["loc"] == (field,) and "surrogate" in error["msg"] and "position 1" in error["msg"]


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/sdapi/v1/options"])
def test_deeply_nested_json_is_400(client, path):
    r = client.post(path, content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "nested too deeply" in r.json()["detail"]
    assert client.get("/sdapi/v1/samplers").status_code == 200
