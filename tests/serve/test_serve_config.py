"""--ray flags and config file, and the JobQueue with several workers (no Ray needed)."""

from __future__ import annotations

import threading

import pytest

from modules.cmd_args import parse_args
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult
from modules.jobs.queue import JobQueue
from modules.serve.config import ServeConfigError, config_from_args


def test_flags_and_config_file_shape_the_deployment(tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text("autoscaling_config: {min_replicas: 1, max_replicas: 6}\n"
                    "ray_actor_options: {num_cpus: 4}\nsave: frontend\nmax_attempts: 5\n"
                    "health_check_period_s: 3\n", encoding="utf-8")
    config = config_from_args(parse_args(["--ray", "auto", "--ray-config", str(path), "--ray-max-attempts", "2"]))
    assert config.address == "auto" and config.save == "frontend"
    assert config.max_attempts == 2  # the flag wins over the file
    assert config.max_replicas == 6  # the front end runs as many jobs at once as Serve may scale to
    filled = config.with_cluster(gpus=0, cpus=16)
    assert filled.ray_actor_options == {"num_cpus": 4, "num_gpus": 0} and filled.threads == 4
    options = filled.deployment_options()
    assert options["autoscaling_config"]["max_replicas"] == 6 and "num_replicas" not in options
    assert options["max_ongoing_requests"] == 1 and options["health_check_period_s"] == 3


def test_defaults_follow_the_cluster():
    config = config_from_args(parse_args(["--ray"]))
    assert config.address is None  # a local cluster
    on_gpus = config.with_cluster(gpus=4, cpus=32)
    assert on_gpus.num_replicas == 4 and on_gpus.ray_actor_options["num_gpus"] == 1
    on_cpu = config.with_cluster(gpus=0, cpus=2)
    assert on_cpu.num_replicas == 1 and on_cpu.ray_actor_options["num_gpus"] == 0
    two = config_from_args(parse_args(["--ray", "--ray-replicas", "2", "--ray-threads", "1"])).with_cluster(0, 2)
    assert (two.num_replicas, two.threads, two.max_replicas) == (2, 1, 2)


@pytest.mark.parametrize("text, key", [("replicas: 2\n", "replicas"), ("save: disk\n", "save"),
                                       ("max_attempts: 0\n", "max_attempts"), ("- 1\n", "mapping")])
def test_a_bad_config_file_names_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ServeConfigError, match=key):
        config_from_args(parse_args(["--ray", "--ray-config", str(path)]))


def test_two_workers_run_two_jobs_at_once_and_positions_count_both():
    release = threading.Event()
    started = threading.Semaphore(0)

    def generate(request, control):
        control.start(1, request.steps)
        started.release()
        release.wait(30)
        return GenerationResult(seeds=[request.seed])

    queue = JobQueue(generate, workers=2)
    try:
        jobs = [queue.submit(GenerationRequest(prompt="p", seed=i), task_id=f"t{i}") for i in range(4)]
        assert started.acquire(timeout=10) and started.acquire(timeout=10)
        assert [queue.position(f"t{i}") for i in range(4)] == [0, 0, 2, 3]
        assert [job.id for job in queue.running] == ["t0", "t1"]
        assert queue.own_job(None).id == "t0"  # plain /progress: the oldest running job
        release.set()
        assert [job.result(10).seeds for job in jobs] == [[0], [1], [2], [3]]
        assert [queue.position(f"t{i}") for i in range(4)] == [-1] * 4
    finally:
        release.set()
        queue.shutdown()
