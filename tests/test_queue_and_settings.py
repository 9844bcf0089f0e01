"""The job queue over the real engine, and settings persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modules.jobs.control import JobState
from modules.jobs.queue import JobQueue, UnknownTaskError
from modules.paths import Paths
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest
from modules.settings import Options, SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    engine = Engine(FixedProvider(tiny_loaded_model()), SettingsStore(None),
                    Paths(data_dir=tmp_path_factory.mktemp("data")))
    q = JobQueue(engine.generate, preview_every=1)
    yield q
    q.shutdown()


def request(seed: int, steps: int = 2, **fields) -> GenerationRequest:
    return GenerationRequest(prompt="a circle", seed=seed, steps=steps, sampler_name="Euler", save_images=False,
                             **fields)


def test_jobs_run_in_order_and_none_is_lost(queue):
    jobs = [queue.submit(request(seed)) for seed in range(6)]
    results = [job.result(timeout=300) for job in jobs]
    assert [r.seeds for r in results] == [[s] for s in range(6)]
    finished = [job.control.snapshot().updated_at for job in jobs]
    assert finished == sorted(finished)
    assert all(job.control.snapshot().state is JobState.DONE for job in jobs)


def test_a_failing_job_does_not_stop_the_others(queue):
    bad = queue.submit(request(1, checkpoint="no-such-model"))
    good = queue.submit(request(2))
    with pytest.raises(KeyError):
        bad.result(timeout=300)
    assert good.result(timeout=300).seeds == [2]
    assert bad.control.snapshot().state is JobState.FAILED
    assert "no-such-model" in bad.control.snapshot().textinfo


def test_interrupt_targets_one_task_and_positions_are_reported(queue):
    first = queue.submit(request(10, steps=30))
    second = queue.submit(request(11, steps=2))
    assert queue.position(second.id) in (1, 2)
    queue.interrupt(first.id)
    interrupted = first.result(timeout=300)
    assert interrupted.interrupted
    assert not second.result(timeout=300).interrupted
    assert queue.position(second.id) == -1
    with pytest.raises(UnknownTaskError):
        queue.position("task(nope)")


def test_progress_moves_with_previews(queue):
    job = queue.submit(request(20, steps=6))
    job.result(timeout=300)
    snap = queue.progress(job.id)
    assert snap.state is JobState.DONE and snap.step == 6 and snap.total_steps == 6
    assert snap.preview is not None and snap.fraction == 1.0


def test_duplicate_running_task_id_is_refused(queue):
    job = queue.submit(request(30, steps=20), task_id="task(fixed)")
    with pytest.raises(ValueError, match="already queued or running"):
        queue.submit(request(31), task_id="task(fixed)")
    job.result(timeout=300)
    again = queue.submit(request(32), task_id="task(fixed)")  # free again once finished
    assert again.result(timeout=300).seeds == [32]


def test_same_request_through_queue_reproduces(queue):
    a = queue.run(request(40))
    b = queue.run(request(40))
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


def test_settings_persist_atomically_and_validate(tmp_path):
    path = tmp_path / "config.json"
    store = SettingsStore(path)
    seen = []
    store.on_change(lambda old, new: seen.append((old.samples_format, new.samples_format)))
    store.update({"samples_format": "jpg", "show_progress_every_n_steps": 3})
    assert json.loads(path.read_text())["samples_format"] == "jpg"
    assert SettingsStore(path).get().show_progress_every_n_steps == 3
    assert seen == [("png", "jpg")]
    with pytest.raises(KeyError, match="no_such_option"):
        store.update({"no_such_option": 1})
    with pytest.raises(ValueError):
        store.update({"jpeg_quality": 500})
    assert store.get().jpeg_quality == Options().jpeg_quality  # a rejected update changes nothing
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp files left behind


def test_corrupt_settings_file_is_a_clear_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        SettingsStore(path)
