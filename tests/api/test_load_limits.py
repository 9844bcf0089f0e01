"""Load on the real server (issue 11, item 6): a job whose client disconnects is stopped, the line
of waiting jobs is bounded (503 + Retry-After), and sizes the device cannot finish in reasonable
time are refused up front."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from modules.processing.limits import CPU_MAX_PIXELS, SizeLimitError
from modules.generation.request import GenerationRequest
from tests.api.helpers import wait_for

LONG = {"prompt": "slow", "steps": 40, "n_iter": 6, "sampler_name": "Euler", "send_images": False}
FAST = {"prompt": "x", "steps": 2, "sampler_name": "Euler a", "seed": 3, "send_images": False}


def send_and_hold(port: int, path: str, body: dict) -> socket.socket:
    """A raw HTTP POST whose connection the test closes itself: a client that goes away."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def status(client, task_id):
    r = client.get("/sdapi/v1/progress", params={"task_id": task_id})
    return r.json() if r.status_code == 200 else None


def running(client, task_id):
    body = status(client, task_id)
    return body if body and body["status"] == "running" and body["state"]["sampling_step"] >= 1 else None


class Post:
    def __init__(self, url: str, body: dict) -> None:
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._run, args=(url, body), daemon=True)
        self.thread.start()

    def _run(self, url, body):
        with httpx.Client(base_url=url, timeout=300) as c:
            self.response = c.post("/sdapi/v1/txt2img", json=body)

    def result(self, timeout: float = 300) -> httpx.Response:
        self.thread.join(timeout)
        assert self.response is not None, "the request did not finish"
        return self.response


# ---------------------------------------------------------------------------------------------
# (a) a client that goes away takes its job with it


def test_disconnect_interrupts_the_running_job_and_the_next_runs(server, client, ctx):
    sock = send_and_hold(server.port, "/sdapi/v1/txt2img", {**LONG, "force_task_id": "gone-running"})
    try:
        wait_for(lambda: running(client, "gone-running"))
    finally:
        sock.close()
    stopped = wait_for(lambda: (s := status(client, "gone-running")) and s["status"] == "done" and s)
    assert stopped["state"]["interrupted"] is True
    assert stopped["state"]["job_no"] < 5  # it did not run all six batches
    current = ctx.queue.current
    assert current is None or current.id != "gone-running"
    after = client.post("/sdapi/v1/txt2img", json=FAST)
    assert after.status_code == 200, after.text
    assert json.loads(after.json()["info"])["interrupted"] is False


def test_disconnect_takes_a_waiting_job_out_of_the_line(server, client, ctx):
    blocker = Post(server.url, {**LONG, "force_task_id": "blocker"})
    try:
        wait_for(lambda: running(client, "blocker"))
        sock = send_and_hold(server.port, "/sdapi/v1/txt2img", {**LONG, "force_task_id": "gone-waiting"})
        try:
            wait_for(lambda: (s := status(client, "gone-waiting")) and s["status"] == "queued")
        finally:
            sock.close()
        cancelled = wait_for(lambda: (s := status(client, "gone-waiting")) and s["status"] == "cancelled" and s)
        assert cancelled["queue_position"] == -1
        assert ctx.queue.pending_count == 0
        assert ctx.queue.get("gone-waiting").future.cancelled()  # resolved: nothing waits on it forever
        assert running(client, "blocker")  # the other client's job carries on
    finally:
        client.post("/sdapi/v1/interrupt", params={"task_id": "blocker"})
    assert blocker.result().status_code == 200


# ---------------------------------------------------------------------------------------------
# (b) a bounded line


def test_full_queue_is_503_with_retry_after(server, client, ctx):
    assert client.get("/sdapi/v1/options").json()["queue_max_pending"] == 64
    assert client.post("/sdapi/v1/options", json={"queue_max_pending": 1}).status_code == 200
    first = Post(server.url, {**LONG, "force_task_id": "full-1"})
    second = None
    try:
        wait_for(lambda: running(client, "full-1"))
        second = Post(server.url, {**LONG, "force_task_id": "full-2"})
        wait_for(lambda: (s := status(client, "full-2")) and s["status"] == "queued")
        refused = client.post("/sdapi/v1/txt2img", json={**FAST, "force_task_id": "full-3"})
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert "queue_max_pending" in refused.json()["detail"]
        assert client.get("/sdapi/v1/progress", params={"task_id": "full-3"}).status_code == 404  # never queued
        # the UI submits through the same queue and gets the same refusal
        from modules.jobs.queue import QueueFullError

        with pytest.raises(QueueFullError, match="queue is full"):
            ctx.queue.submit(GenerationRequest(prompt="x", steps=1))
    finally:
        client.post("/sdapi/v1/options", json={"queue_max_pending": 64})
        client.post("/sdapi/v1/interrupt", params={"task_id": "full-2"})
        client.post("/sdapi/v1/interrupt", params={"task_id": "full-1"})
    assert first.result().status_code == 200
    assert second.result().status_code == 200


# ---------------------------------------------------------------------------------------------
# (c) sizes the device cannot finish in reasonable time


def test_size_past_the_device_limit_is_422_up_front(client, ctx):
    from modules.models.options import resolve_device

    if resolve_device(ctx.registry.options).type != "cpu":
        pytest.skip("the CPU default is what this checks")
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "width": 2048, "height": 2048, "force_task_id": "huge"})
    assert r.status_code == 422, r.text
    locs = [".".join(str(p) for p in e["loc"]) for e in r.json()["detail"]]
    assert locs == ["body.width", "body.height"]
    message = r.json()["errors"]
    assert "2048x2048" in message and str(CPU_MAX_PIXELS) in message and "max_generation_pixels" in message
    assert client.get("/sdapi/v1/progress", params={"task_id": "huge"}).status_code == 404  # never queued
    # the UI's path: the queue itself refuses
    with pytest.raises(SizeLimitError, match="max_generation_pixels"):
        ctx.queue.submit(GenerationRequest(prompt="x", width=2048, height=1024))
    # the setting moves the limit both ways
    try:
        assert client.post("/sdapi/v1/options", json={"max_generation_pixels": 96 * 96}).status_code == 200
        small = client.post("/sdapi/v1/txt2img", json={**FAST, "width": 128, "height": 128})
        assert small.status_code == 422 and "max_generation_pixels setting" in small.json()["errors"]
        assert client.post("/sdapi/v1/txt2img", json={**FAST, "width": 64, "height": 64}).status_code == 200
    finally:
        client.post("/sdapi/v1/options", json={"max_generation_pixels": 0})
    bad = client.post("/sdapi/v1/options", json={"max_generation_pixels": -1})
    assert bad.status_code == 422 and "max_generation_pixels" in bad.text
