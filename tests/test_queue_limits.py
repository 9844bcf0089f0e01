"""The queue's admission and ownership rules over the real engine (issue 11, items 3 and 6): owners
see and command only their own jobs, waiting jobs are bounded, a job can be taken out of the line,
and the size rule refuses per device."""

from __future__ import annotations

import pytest

from modules.jobs.control import JobState
from modules.jobs.queue import JobQueue, QueueFullError, UnknownTaskError
from modules.paths import Paths
from modules.processing import limits
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest
from modules.settings import SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(FixedProvider(tiny_loaded_model()), SettingsStore(None),
                  Paths(data_dir=tmp_path_factory.mktemp("data")))


@pytest.fixture()
def queue(engine):
    q = JobQueue(engine.generate, preview_every=0, max_pending=2,
                 admit=limits.request_size_check(lambda: 0, "cpu"))
    yield q
    q.shutdown()


def request(seed: int, steps: int = 2, **fields) -> GenerationRequest:
    return GenerationRequest(prompt="a circle", seed=seed, steps=steps, sampler_name="Euler", save_images=False,
                             **fields)


def wait_running(job) -> None:
    import time

    deadline = time.monotonic() + 120
    while job.control.snapshot().step < 1:
        assert time.monotonic() < deadline and not job.future.done(), "the job did not start"
        time.sleep(0.01)


def test_owners_see_and_command_only_their_own_jobs(queue):
    alice = queue.submit(request(1, steps=150), owner="alice")
    wait_running(alice)
    bob_waiting = queue.submit(request(2), owner="bob")
    assert queue.own_job("alice") is alice
    assert queue.own_job("bob") is bob_waiting  # nothing of his runs: his first waiting job
    assert queue.own_job("carol") is None
    assert queue.own_job(None) is alice  # no auth: the running job, as A1111
    with pytest.raises(UnknownTaskError):
        queue.get(alice.id, "bob")
    with pytest.raises(UnknownTaskError):
        queue.interrupt(alice.id, "bob")
    assert queue.interrupt(None, "bob") is True  # his own waiting job, not hers
    assert not alice.control.interrupted and bob_waiting.control.interrupted
    assert queue.interrupt(None, "alice") is True
    assert alice.result(timeout=300).interrupted


def test_waiting_jobs_are_bounded_and_a_cancelled_one_leaves_the_line(queue):
    running = queue.submit(request(1, steps=150))
    wait_running(running)
    first, second = queue.submit(request(2)), queue.submit(request(3))
    with pytest.raises(QueueFullError) as full:
        queue.submit(request(4))
    assert full.value.limit == 2 and full.value.retry_after_s >= 1
    queue.cancel(first, "Cancelled: gone")
    assert first.future.cancelled() and first.control.snapshot().state is JobState.CANCELLED
    assert queue.position(first.id) == -1 and queue.pending_count == 1
    third = queue.submit(request(5))  # the freed place is usable
    queue.cancel(running)  # a running job is interrupted and still resolves
    assert running.result(timeout=300).interrupted
    assert second.result(timeout=300).seeds == [3] and third.result(timeout=300).seeds == [5]
    queue.set_max_pending(0)
    more = [queue.submit(request(10 + i)) for i in range(4)]  # 0: no bound
    assert [j.result(timeout=300).seeds for j in more] == [[10], [11], [12], [13]]


def test_size_rule_per_device_and_setting(queue):
    with pytest.raises(limits.SizeLimitError, match=r"2048x2048 .* 1048576 pixels"):
        queue.submit(request(1, width=2048, height=2048))
    assert queue.pending_count == 0
    limits.check_size(1024, 1024, 0, "cpu")
    limits.check_size(2048, 2048, 0, "cuda")
    limits.check_size(None, None, 64 * 64, "cpu")  # the model's native size
    with pytest.raises(limits.SizeLimitError, match="the max_generation_pixels setting"):
        limits.check_size(128, 64, 64 * 64, "cuda")
