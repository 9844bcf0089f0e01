"""The queue behind the API: concurrent requests, progress while a job runs, interrupt and skip."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time

import httpx

from tests.api.helpers import decode, wait_for

# Long enough on the tiny model to be caught running; every test ends it early or waits.
LONG = {"prompt": "slow", "steps": 40, "n_iter": 6, "sampler_name": "Euler", "send_images": False}


class Background:
    """One POST in a thread, so the test can poll /progress while it runs."""

    def __init__(self, url: str, path: str, body: dict) -> None:
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._run, args=(url, path, body), daemon=True)
        self.thread.start()

    def _run(self, url, path, body):
        with httpx.Client(base_url=url, timeout=300) as c:
            self.response = c.post(path, json=body)

    def result(self, timeout: float = 300) -> httpx.Response:
        self.thread.join(timeout)
        assert self.response is not None, "the request did not finish"
        return self.response


def running(client, task_id):
    progress = client.get("/sdapi/v1/progress", params={"task_id": task_id})
    if progress.status_code != 200:
        return None
    body = progress.json()
    return body if body["status"] == "running" and body["state"]["sampling_step"] >= 1 else None


def test_eight_concurrent_requests_all_answered_with_their_seeds(server):
    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as c:
            async def one(seed):
                r = await c.post("/sdapi/v1/txt2img", json={"prompt": f"p{seed}", "seed": seed, "steps": 2,
                                                            "sampler_name": "Euler a"})
                return seed, r

            async def poll():  # the event loop stays free while jobs wait in the queue
                worst = 0.0
                for _ in range(10):
                    t = time.perf_counter()
                    r = await c.get("/sdapi/v1/progress")
                    assert r.status_code == 200
                    worst = max(worst, time.perf_counter() - t)
                    await asyncio.sleep(0.05)
                return worst

            results = await asyncio.gather(*(one(1000 + i) for i in range(8)), poll())
            return results[:-1], results[-1]

    # a thread of its own: the browser tests' Playwright keeps an event loop on the main thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answers, worst_progress = pool.submit(asyncio.run, main()).result()
    assert worst_progress < 2.0
    for seed, response in answers:
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert info["seed"] == seed and info["prompt"] == f"p{seed}"
        assert f"Seed: {seed}," in info["infotexts"][0]


def test_progress_moves_per_task_with_preview_and_interrupt(server, client):
    job = Background(server.url, "/sdapi/v1/txt2img", {**LONG, "force_task_id": "task-progress"})
    first = wait_for(lambda: running(client, "task-progress"))
    assert first["task_id"] == "task-progress" and first["queue_position"] == 0
    assert first["state"]["job"] == "task-progress" and first["state"]["job_count"] == 6
    assert first["state"]["sampling_steps"] == 40

    def moved():
        now = client.get("/sdapi/v1/progress", params={"id_task": "task-progress"}).json()
        return now if now["progress"] > first["progress"] and now["current_image"] else None

    later = wait_for(moved)
    assert 0 < later["progress"] < 1 and later["eta_relative"] >= 0
    assert decode(later["current_image"]).format == "PNG"
    # the plain A1111 call reports the running job too
    plain = client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()
    assert plain["state"]["job"] == "task-progress" and plain["current_image"] is None

    assert client.post("/sdapi/v1/interrupt").status_code == 200
    response = job.result()
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["interrupted"] is True and len(info["all_seeds"]) < 6

    done = client.get("/sdapi/v1/progress", params={"task_id": "task-progress"}).json()
    assert done["status"] == "done" and done["progress"] == 1.0 and done["queue_position"] == -1
    assert done["state"]["interrupted"] is True


def test_queued_task_position_skip_and_interrupt_by_task_id(server, client):
    first = Background(server.url, "/sdapi/v1/txt2img", {**LONG, "n_iter": 2, "force_task_id": "task-first"})
    wait_for(lambda: running(client, "task-first"))
    second = Background(server.url, "/sdapi/v1/txt2img", {**LONG, "n_iter": 2, "force_task_id": "task-second"})

    def queued():
        r = client.get("/sdapi/v1/progress", params={"task_id": "task-second"})
        return r.json() if r.status_code == 200 else None

    waiting = wait_for(queued)
    assert waiting["status"] == "queued" and waiting["queue_position"] == 1 and waiting["progress"] == 0

    # the same task id again while it is queued: 409
    clash = client.post("/sdapi/v1/txt2img", json={**LONG, "force_task_id": "task-second"})
    assert clash.status_code == 409, clash.text

    # skip the first task's current batch: the job still ends with both images
    assert client.post("/sdapi/v1/skip", params={"task_id": "task-first"}).status_code == 200
    wait_for(lambda: (now := running(client, "task-first")) and now["state"]["job_no"] == 1)
    assert client.post("/sdapi/v1/interrupt", params={"task_id": "task-first"}).status_code == 200
    info = json.loads(first.result().json()["info"])
    assert any("skipped" in w for w in info["warnings"])
    assert info["interrupted"] is True

    wait_for(lambda: running(client, "task-second"))
    assert client.post("/sdapi/v1/interrupt", params={"task_id": "task-second"}).status_code == 200
    response = second.result()
    assert response.status_code == 200 and json.loads(response.json()["info"])["interrupted"] is True


def test_idle_progress_and_unknown_task(client):
    idle = wait_for(lambda: (lambda r: r if r["state"]["job_count"] == 0 else None)(
        client.get("/sdapi/v1/progress").json()))
    assert idle["progress"] == 0 and idle["current_image"] is None
    assert set(idle["state"]) >= {"skipped", "interrupted", "job", "job_count", "job_timestamp", "job_no",
                                  "sampling_step", "sampling_steps"}
    missing = client.get("/sdapi/v1/progress", params={"task_id": "no-such-task"})
    assert missing.status_code == 404 and "no-such-task" in missing.json()["detail"]
    assert client.post("/sdapi/v1/interrupt", params={"task_id": "no-such-task"}).status_code == 404
