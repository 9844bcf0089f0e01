"""The Ray Serve deployment: one engine per replica, one job at a time (max_ongoing_requests=1).

Each replica builds the same services as a single-process app (`create_context`, from the front
end's flags) and runs each job through its own local JobQueue, so progress, interrupt and skip
work exactly as they do in one process. `run` is a streaming method: it yields ReplicaStarted,
then JobProgress whenever the snapshot changes, then JobOutcome or JobFailed.

Model affinity is Ray Serve's model multiplexing: the front end tags each job with its checkpoint
title and the router prefers replicas that have that model loaded (`_load_model`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
from typing import Any, AsyncIterator

from modules.serve.messages import JobFailed, JobOutcome, JobProgress, RemoteJob, ReplicaStarted

log = logging.getLogger(__name__)

SIGNAL_POLL_S = 0.1  # how often a running job checks for interrupt / skip / watch (10 calls/s)


def deployment_class(models_per_replica: int):
    """The replica class, with Serve's multiplexing LRU as large as the registry's (a setting)."""
    from ray import serve

    class EngineReplica:
        def __init__(self, args, signals, threads: int) -> None:
            import torch

            torch.set_num_threads(max(1, threads))
            from modules.app_factory import create_context

            self._ctx = create_context(args)
            self._signals = signals
            self._replica_id = serve.get_replica_context().replica_tag
            log.info("replica %s (pid %d) ready with %d torch threads", self._replica_id, os.getpid(), threads)

        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def _load_model(self, model_id: str) -> str:
            # The registry owns the weights (and its own LRU); this tells Serve's router where they are.
            await asyncio.to_thread(self._ctx.registry.get, model_id)
            return model_id

        async def run(self, job: RemoteJob) -> AsyncIterator[Any]:
            yield ReplicaStarted(replica_id=self._replica_id, pid=os.getpid(), node=socket.gethostname(),
                                 attempt=job.attempt)
            try:
                self._adopt(job)
                model_id = serve.get_multiplexed_model_id()
                if model_id:
                    await self._load_model(model_id)
                local = self._ctx.queue.submit(job.request, job.task_id, preview_every=job.preview_every)
            except Exception as exc:  # a model that cannot load, a refused size...: the job's own fault
                yield JobFailed(_portable(exc))
                return
            local.control.previews_when_watched = job.previews_when_watched
            waiting = asyncio.wrap_future(local.future)
            sent = None
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=SIGNAL_POLL_S)
                signals = await self._signals.take.remote(job.task_id)
                if signals.interrupt and not local.control.interrupted:
                    local.control.interrupt()
                for _ in range(signals.skips):
                    local.control.skip()
                if signals.watched:
                    local.control.watch_previews()
                snapshot = local.control.snapshot()
                if snapshot is not sent:  # each change replaces the (frozen) snapshot
                    changed_preview = sent is None or snapshot.preview is not sent.preview
                    yield JobProgress(snapshot if changed_preview else _without_preview(snapshot))
                    sent = snapshot
                if done:
                    break
            try:
                yield JobOutcome(waiting.result())
            except Exception as exc:
                yield JobFailed(_portable(exc))

        def _adopt(self, job: RemoteJob) -> None:
            """The front end's settings for this job (changed over /options after this replica started)."""
            if job.options != self._ctx.settings.get():
                self._ctx.settings.adopt(job.options)

        def check_health(self) -> None:
            if self._ctx.queue.closed:
                raise RuntimeError("the replica's job queue is shut down")

    return EngineReplica


def _without_preview(snapshot):
    from dataclasses import replace

    return replace(snapshot, preview=None)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (the front end maps it to the same HTTP
    answer as one process would), else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
