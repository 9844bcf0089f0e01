"""The engine on Ray Serve replicas (launch.py --ray): the same answers as one process, jobs
spread over replicas, per-task progress / interrupt / skip reaching the replica, model affinity,
and no job or file lost when a replica dies mid-job."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.api.helpers import decode, wait_for
from tests.serve.conftest import MODEL_B

pytestmark = pytest.mark.slow


def txt2img(client, **fields):
    body = {"prompt": "a red circle on blue", "steps": 6, "width": 64, "height": 64, "seed": 1, **fields}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def pixels(response: dict) -> list[np.ndarray]:
    return [np.asarray(decode(b64).convert("RGB")) for b64 in response["images"]]


def same_pixels(a: dict, b: dict) -> bool:
    pa, pb = pixels(a), pixels(b)
    return len(pa) == len(pb) and all(np.array_equal(x, y) for x, y in zip(pa, pb))


def test_sixteen_concurrent_requests_all_return_with_the_single_process_pixels(front_client, reference_client,
                                                                              remote):
    requests = [{"seed": 1000 + i, "prompt": f"shape number {i}", "steps": 4 + i % 3} for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda fields: txt2img(front_client, **fields), requests))
    for fields, answer in zip(requests, answers):
        info = __import__("json").loads(answer["info"])
        assert info["seed"] == fields["seed"] and info["all_seeds"] == [fields["seed"]]
        assert len(answer["images"]) == 1
    runs = [view for view in remote.history if view.attempt == 1]
    assert len({view.replica_id for view in runs}) == 2  # both replicas worked
    for fields, answer in zip(requests, answers):
        assert same_pixels(answer, txt2img(reference_client, **fields)), fields


def test_a_random_seed_is_fixed_once_and_reported(front_client):
    answer = txt2img(front_client, seed=-1)
    info = __import__("json").loads(answer["info"])
    assert 0 <= info["seed"] < 2**32
    again = txt2img(front_client, seed=info["seed"], subseed=info["subseed"])
    assert same_pixels(answer, again)


def _submit(client, task_id: str, **fields):
    """Start a job in a thread; returns (thread, holder) where holder gets the response."""
    holder: dict = {}

    def run() -> None:
        body = {"prompt": "slow job", "steps": 40, "width": 64, "height": 64, "seed": 7,
                "force_task_id": task_id, **fields}
        holder["response"] = client.post("/sdapi/v1/txt2img", json=body)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, holder


def _progress(client, task_id: str) -> dict:
    response = client.get("/sdapi/v1/progress", params={"task_id": task_id})
    assert response.status_code == 200, response.text
    return response.json()


def _step(client, task_id: str) -> int:
    """The task's sampling step; -1 while its request has not reached the server yet."""
    response = client.get("/sdapi/v1/progress", params={"task_id": task_id})
    return response.json()["state"]["sampling_step"] if response.status_code == 200 else -1


def test_progress_positions_and_interrupt_reach_the_replica_of_each_task(front_client):
    ids = [f"ray-interrupt-{i}" for i in range(3)]
    started = []
    for task_id in ids:  # one after the other, so the queue's order is the list's
        started.append(_submit(front_client, task_id, n_iter=3))
        wait_for(lambda: _step(front_client, task_id) >= 0, timeout=60)
    # two replicas: two jobs run, the third waits behind them
    wait_for(lambda: all(_step(front_client, t) > 0 for t in ids[:2]), timeout=120)
    running = [_progress(front_client, t) for t in ids[:2]]
    assert [p["queue_position"] for p in running] == [0, 0]
    assert _progress(front_client, ids[2])["queue_position"] == 2
    assert all(p["status"] == "running" and p["state"]["sampling_steps"] == 40 for p in running)
    # progress with a live preview comes from the replica
    assert wait_for(lambda: _progress(front_client, ids[0])["current_image"], timeout=60)
    for task_id in ids:
        assert front_client.post("/sdapi/v1/interrupt", params={"task_id": task_id}).status_code == 200
    for thread, holder in started:
        thread.join(120)
        response = holder["response"]
        assert response.status_code == 200, response.text
        assert len(response.json()["images"]) < 3  # stopped in its first batch, not after three
    final = _progress(front_client, ids[0])
    assert final["status"] == "done" and final["state"]["interrupted"] is True


def test_skip_reaches_the_replica_and_ends_only_the_current_batch(front_client, reference_client):
    thread, holder = _submit(front_client, "ray-skip", n_iter=2, steps=30, seed=21)
    wait_for(lambda: _step(front_client, "ray-skip") >= 2, timeout=120)
    assert front_client.post("/sdapi/v1/skip", params={"task_id": "ray-skip"}).status_code == 200
    thread.join(120)
    skipped = pixels(holder["response"].json())
    reference = pixels(txt2img(reference_client, prompt="slow job", n_iter=2, steps=30, seed=21))
    assert len(skipped) == 2
    assert not np.array_equal(skipped[0], reference[0])  # the skipped batch stopped early
    assert np.array_equal(skipped[1], reference[1])  # the next batch ran in full


def test_jobs_go_to_the_replica_that_has_their_model_loaded(front_client, remote):
    models = {}
    for seed in range(3):
        txt2img(front_client, seed=seed, override_settings={"sd_model_checkpoint": MODEL_B})
        view = remote.history[-1]
        assert view.model.startswith(MODEL_B)
        models.setdefault(view.replica_id, 0)
        models[view.replica_id] += 1
    assert len(models) == 1  # every job for tiny-b went where tiny-b was already loaded


def _wait_replicas_healthy(timeout: float = 180) -> None:
    from ray import serve

    def healthy() -> bool:
        app = serve.status().applications.get("sd-webui")
        deployment = app.deployments["EngineReplica"] if app else None
        return bool(deployment) and deployment.status == "HEALTHY" and \
            deployment.replica_states.get("RUNNING", 0) == 2
    assert wait_for(healthy, timeout=timeout, every=0.5)


def test_a_replica_killed_mid_job_costs_nothing(front_client, front, remote, reference_client, data_dir):
    _wait_replicas_healthy()
    outputs = data_dir / "outputs"
    before = set((outputs / "txt2img-images").rglob("*.png"))
    jobs = {f"ray-kill-{i}": 300 + 10 * i for i in range(4)}
    started = {task_id: _submit(front_client, task_id, seed=seed, steps=12, n_iter=2, save_images=True)
               for task_id, seed in jobs.items()}
    victim = "ray-kill-0"
    # kill it after its first image was saved, so the rerun must not leave that image twice
    wait_for(lambda: _step(front_client, victim) >= 0 and front.queue.get(victim).control.snapshot().saved_paths,
             timeout=120)
    view = next(v for v in remote.running() if v.task_id == victim)
    os.kill(view.pid, signal.SIGKILL)
    answers = {}
    for task_id, (thread, holder) in started.items():
        thread.join(240)
        assert holder["response"].status_code == 200, holder["response"].text
        answers[task_id] = holder["response"].json()
    runs = [v for v in remote.history if v.task_id == victim]
    assert [v.attempt for v in runs] == [1, 2] and runs[1].pid != view.pid
    for task_id, seed in jobs.items():  # every job, the victim included, has the one-process pixels
        reference = txt2img(reference_client, prompt="slow job", seed=seed, steps=12, n_iter=2)
        generated = pixels(answers[task_id])[-2:]  # after the grid, which saving adds
        assert all(np.array_equal(a, b) for a, b in zip(generated, pixels(reference)[-2:])), task_id
    saved = sorted(p.name for p in set((outputs / "txt2img-images").rglob("*.png")) - before)
    assert len(saved) == 8  # 4 jobs x 2 images, each once
    for seed in jobs.values():
        assert sum(name.endswith(f"-{seed}.png") for name in saved) == 1
        assert sum(name.endswith(f"-{seed + 1}.png") for name in saved) == 1
    _wait_replicas_healthy()  # Serve replaced the dead replica


def test_after_max_attempts_the_client_gets_a_clear_503(front, remote, data_dir):
    from dataclasses import replace

    from modules.generation.request import GenerationRequest
    from modules.jobs.control import JobControl
    from modules.serve.dispatch import RemoteEngine, ReplicasUnavailableError

    _wait_replicas_healthy()
    once = RemoteEngine(handle=remote.handle, signals=remote.signals, config=replace(remote.config, max_attempts=1))
    once.bind(front.settings, front.registry, front.paths)
    control = JobControl(task_id="ray-once")
    outcome: dict = {}

    def run() -> None:
        try:
            once.generate(GenerationRequest(prompt="x", steps=150, width=64, height=64, seed=3), control)
        except ReplicasUnavailableError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    view = wait_for(lambda: next((v for v in once.running() if v.task_id == "ray-once"), None), timeout=120)
    wait_for(lambda: control.snapshot().step > 0, timeout=120)
    os.kill(view.pid, signal.SIGKILL)
    thread.join(60)
    assert "error" in outcome and "max_attempts" in str(outcome["error"])
    from modules.api.errors import ErrorMapper

    response = ErrorMapper(lambda kind: []).to_response(outcome["error"])
    assert response.status_code == 503 and b"ray-once" in response.body
    _wait_replicas_healthy()


def test_with_save_frontend_the_front_end_writes_each_image_once(remote, data_dir):
    """Replicas save nothing; the front end writes the files, with the infotext the job made."""
    from dataclasses import replace

    from PIL import Image

    from modules.app_factory import create_context
    from modules.generation.request import GenerationRequest
    from modules.serve.dispatch import RemoteEngine
    from tests.serve.conftest import make_args

    engine = RemoteEngine(handle=remote.handle, signals=remote.signals, config=replace(remote.config, save="frontend"))
    ctx = create_context(make_args(data_dir), remote=engine)
    try:
        result = ctx.queue.run(GenerationRequest(prompt="saved here", steps=4, width=64, height=64, seed=700,
                                                 batch_count=2, save_images=True))
    finally:
        ctx.queue.shutdown()
    images = data_dir / "outputs" / "txt2img-images"
    for seed, infotext in zip((700, 701), result.infotexts):
        files = list(images.rglob(f"*-{seed}.png"))
        assert len(files) == 1
        assert Image.open(files[0]).info["parameters"] == infotext
    assert sorted(result.saved_paths) == sorted(str(p) for s in (700, 701) for p in images.rglob(f"*-{s}.png"))
