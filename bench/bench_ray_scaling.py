"""Throughput of the engine on 1 and N Ray Serve replicas (launch.py --ray), measured in one run.

    python -m bench.bench_ray_scaling [--replicas 1 2] [--threads 1] [--jobs 8] [--steps 20] [--batch 1 4]

Starts a local Ray cluster, deploys the embedded model on each replica count in turn, and sends
`--jobs` txt2img jobs at once through the front end's JobQueue (as the API and UI do). Each
replica runs torch on `--threads` threads; the single-process engine on the same thread count is
the baseline. Prints images/s per configuration and the scaling efficiency
throughput(N) / (N x throughput(1)) (goal: >= 0.9 where cores allow). On a GPU cluster use
`--gpus` (one replica per GPU) and a real checkpoint with `--ckpt`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import wait
from pathlib import Path

PROMPT = "a red circle on a blue background"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per replica (and for the baseline)")
    ap.add_argument("--jobs", type=int, default=8, help="jobs sent at once per measurement")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes to measure")
    ap.add_argument("--gpus", action="store_true", help="one GPU per replica")
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: the embedded model)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import ray
    import torch

    from modules.app_factory import create_context
    from modules.cmd_args import parse_args
    from modules.serve.config import ServeConfig
    from modules.serve.launcher import deploy, replica_args, runtime_env

    torch.set_num_threads(args.threads)
    data_dir = Path("tmp/bench_ray")
    flags = ["--data-dir", str(data_dir), "--nowebui", *(["--ckpt", args.ckpt] if args.ckpt else []),
             *([] if args.gpus else ["--use-cpu"])]
    app_args = parse_args(flags)
    ray.init(include_dashboard=False, runtime_env=runtime_env(args.threads), log_to_driver=False,
             object_store_memory=512 * 2**20)
    resources = ray.cluster_resources()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Ray sees "
          f"{resources.get('CPU', 0):.0f} CPUs, {resources.get('GPU', 0):.0f} GPUs; torch threads per "
          f"replica: {args.threads}; jobs: {args.jobs}, steps: {args.steps}")
    print(f"command: {' '.join([sys.executable.split('/')[-1], '-m', 'bench.bench_ray_scaling', *sys.argv[1:]])}")

    local = create_context(app_args)

    def throughput(queue, batch: int) -> float:
        requests = [_request(seed, args.steps, batch) for seed in range(args.jobs)]
        queue.run(_request(10_000, args.steps, batch))  # warm-up: model loaded, first-call costs paid
        started = time.perf_counter()
        jobs = [queue.submit(request) for request in requests]
        wait([job.future for job in jobs])
        for job in jobs:
            job.result()
        return args.jobs * batch / (time.perf_counter() - started)

    rows = []
    for batch in args.batch:
        base = throughput(local.queue, batch)
        rows.append((batch, "one process (no Ray)", base, None))
        first = None
        for n in args.replicas:
            options = {"num_cpus": args.threads, "num_gpus": 1 if args.gpus else 0}
            engine = deploy(ServeConfig(num_replicas=n, ray_actor_options=options, threads=args.threads),
                            replica_args(app_args), models_per_replica=1)
            ctx = create_context(app_args, remote=engine)
            # every replica warm before the clock starts: n jobs at once land on n replicas
            warm = [ctx.queue.submit(_request(20_000 + i, 2, batch)) for i in range(2 * n)]
            wait([job.future for job in warm])
            assert len({view.replica_id for view in engine.history}) == n, "a replica got no warm-up job"
            value = throughput(ctx.queue, batch)
            ctx.queue.shutdown()
            first = value if n == args.replicas[0] else first
            efficiency = value / (n / args.replicas[0] * first) if first else None
            rows.append((batch, f"{n} replica(s)", value, efficiency))
    local.queue.shutdown()
    print(f"{'batch':>5}  {'configuration':<22} {'images/s':>9}  {'efficiency':>10}")
    for batch, name, value, efficiency in rows:
        eff = f"{efficiency:.2f}" if efficiency is not None else "-"
        print(f"{batch:>5}  {name:<22} {value:>9.2f}  {eff:>10}")
    ray.shutdown()


def _request(seed: int, steps: int, batch: int):
    from modules.generation.request import GenerationRequest

    return GenerationRequest(prompt=PROMPT, seed=seed, steps=steps, width=64, height=64, batch_size=batch,
                             save_images=False)


if __name__ == "__main__":
    main()
