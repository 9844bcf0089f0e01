"""The one job queue: UI and API submit requests here; workers run them in order.

One worker by default (one device, one job at a time). With --ray each worker hands its job to
a Ray Serve replica (modules/serve/), so `workers` jobs run at once while the rest wait here: the
one line whose positions and task ids the UI and API read.

A failing job resolves its own future with the exception and the worker moves on, so one bad
request never stops the others.

Admission happens in `submit`, before a job waits in line, so the UI and the API refuse alike:
an `admit` check (the size limit, modules/processing/limits.py) and a bound on waiting jobs
(QueueFullError, the API's 503). Each job records its `owner` (the API user; None = anyone):
an owner sees and commands only their own jobs, while owner None (no auth) sees them all.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from modules.jobs.control import JobControl, JobState, ProgressSnapshot
from modules.jobs.task import QueueTask
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult

GenerateFn = Callable[[GenerationRequest, JobControl], GenerationResult]
AdmitFn = Callable[[GenerationRequest], None]  # raises to refuse a request before it is queued

FINISHED_JOBS_KEPT = 256  # so a client can still read progress/result of a recent task


@dataclass
class Job:
    id: str
    request: Union[GenerationRequest, QueueTask]  # a generation, or other work (Extras)
    control: JobControl
    future: Future = field(default_factory=Future)
    submitted_at: float = field(default_factory=time.time)
    owner: Optional[str] = None  # the user who submitted it; None: no auth, anyone's

    def visible_to(self, owner: Optional[str]) -> bool:
        """Whether a caller sees this job: everyone without auth, else only its owner."""
        return owner is None or self.owner == owner

    def result(self, timeout: Optional[float] = None) -> Any:  # GenerationResult, or the task's result
        return self.future.result(timeout)


class UnknownTaskError(KeyError):
    """No such task, or one the caller may not see (the same answer, so ids do not leak)."""


class DuplicateTaskError(ValueError):
    """A task id that is still queued or running."""


class QueueFullError(RuntimeError):
    """The line of waiting jobs is at its bound; try again after `retry_after_s`."""

    def __init__(self, pending: int, limit: int, retry_after_s: int) -> None:
        self.pending, self.limit, self.retry_after_s = pending, limit, retry_after_s
        super().__init__(f"the job queue is full ({pending} jobs waiting, the limit is {limit}, setting "
                         f"queue_max_pending); try again in about {retry_after_s} s")


class JobQueue:
    def __init__(self, generate: GenerateFn, preview_every: int = 0, max_pending: int = 0,
                 admit: Optional[AdmitFn] = None, workers: int = 1) -> None:
        self._generate = generate
        self._preview_every = preview_every
        self._max_pending = max(0, max_pending)  # 0 = no bound
        self._admit = admit
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: list[Job] = []  # oldest first
        self._closed = False
        self._counter = itertools.count()
        self._workers = [threading.Thread(target=self._run, name=f"job-queue-worker-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for worker in self._workers:
            worker.start()

    # ---- submitting
    def submit(self, request: Union[GenerationRequest, QueueTask], task_id: Optional[str] = None,
               preview_every: Optional[int] = None, owner: Optional[str] = None) -> Job:
        """Queue a job. Raises the admit check's error, DuplicateTaskError or QueueFullError.
        A QueueTask (modules/jobs/task.py) runs on the same worker instead of the engine."""
        if self._admit is not None and isinstance(request, GenerationRequest):
            self._admit(request)
        every = self._preview_every if preview_every is None else preview_every
        job_id = task_id or f"task({uuid.uuid4().hex[:15]})"
        job = Job(id=job_id, request=request, control=JobControl(preview_every=every, task_id=job_id), owner=owner)
        with self._lock:
            if self._closed:
                raise RuntimeError("the job queue is shut down")
            if job.id in self._jobs and not self._jobs[job.id].future.done():
                raise DuplicateTaskError(f"task id {job.id!r} is already queued or running")
            if self._max_pending and len(self._pending) >= self._max_pending:
                raise QueueFullError(len(self._pending), self._max_pending, self._retry_after_s())
            self._jobs[job.id] = job
            self._jobs.move_to_end(job.id)
            self._pending.append(job)
            self._lock.notify_all()
        return job

    def run(self, request: GenerationRequest, task_id: Optional[str] = None) -> GenerationResult:
        """Submit and wait: for callers that want the result in the same thread."""
        return self.submit(request, task_id).result()

    def _retry_after_s(self) -> int:
        """A rough wait until a place frees: what the first running job to end has left (under the lock)."""
        etas = [eta for eta in (job.control.snapshot().eta_s for job in self._running) if eta is not None]
        return max(1, math.ceil(min(etas))) if etas else 5

    # ---- reading
    def get(self, task_id: str, owner: Optional[str] = None) -> Job:
        """The task, if `owner` may see it (see Job.visible_to); UnknownTaskError otherwise."""
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None or not job.visible_to(owner):
                raise UnknownTaskError(task_id)
            return job

    def own_job(self, owner: Optional[str] = None) -> Optional[Job]:
        """What a caller's plain /progress, /interrupt and /skip mean: without an owner (no auth)
        the running job (the oldest, when several run), as in A1111; for an owner, their running
        job, else their first waiting one."""
        with self._lock:
            if owner is None:
                return self._running[0] if self._running else None
            return next((job for job in (*self._running, *self._pending) if job.owner == owner), None)

    @property
    def current(self) -> Optional[Job]:
        """The oldest running job."""
        with self._lock:
            return self._running[0] if self._running else None

    @property
    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running)

    def position(self, task_id: str) -> int:
        """0 while running, n when n jobs run or wait before it, -1 once finished."""
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None:
                raise UnknownTaskError(task_id)
            if job.future.done():  # before the worker clears _running: its future resolves first
                return -1
            if job in self._running:
                return 0
            return list(self._pending).index(job) + len(self._running)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def progress(self, task_id: Optional[str] = None) -> Optional[ProgressSnapshot]:
        job = self._target(task_id)
        return job.control.snapshot() if job is not None else None

    def _target(self, task_id: Optional[str], owner: Optional[str] = None) -> Optional[Job]:
        """The named task, or the caller's own job when no id is given (see own_job)."""
        return self.own_job(owner) if task_id is None else self.get(task_id, owner)

    # ---- commands
    def set_preview_every(self, steps: int) -> None:
        """Live-preview interval for jobs submitted from now on (0 = off)."""
        self._preview_every = max(0, steps)

    def set_max_pending(self, limit: int) -> None:
        """Bound on waiting jobs for submits from now on (0 = none); jobs already waiting stay."""
        self._max_pending = max(0, limit)

    def interrupt(self, task_id: Optional[str] = None, owner: Optional[str] = None) -> bool:
        """Interrupt one task (running or queued) or, with no id, the caller's own job."""
        job = self._target(task_id, owner)
        if job is not None:
            job.control.interrupt()
        return job is not None

    def skip(self, task_id: Optional[str] = None, owner: Optional[str] = None) -> bool:
        job = self._target(task_id, owner)
        if job is not None:
            job.control.skip()
        return job is not None

    def cancel(self, job: Job, reason: str = "Cancelled") -> None:
        """Stop a job nobody waits for any more: a waiting one leaves the line (its future is
        cancelled), a running one is interrupted (its future resolves when the engine stops)."""
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
                job.control.cancel(reason)
                job.future.cancel()
                return
        if not job.future.done():
            job.control.interrupt()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            for job in self._pending:
                job.future.cancel()
            self._pending.clear()
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # ---- the worker
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                self._running.append(job)
            try:
                self._execute(job)
            finally:
                with self._lock:
                    self._running.remove(job)
                    self._forget_old_jobs()

    def _execute(self, job: Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            work = job.request
            result = work.run(job.control) if isinstance(work, QueueTask) else self._generate(work, job.control)
        except BaseException as exc:  # the worker must outlive any job
            job.control.finish(failed=True, textinfo=f"{type(exc).__name__}: {exc}")
            job.future.set_exception(exc)
        else:
            job.control.finish(textinfo="Interrupted" if getattr(result, "interrupted", False) else "Done")
            job.future.set_result(result)

    def _forget_old_jobs(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.future.done()]
        for jid in finished:  # the record of a finished job keeps no input images (megabytes each)
            self._jobs[jid].request = self._jobs[jid].request.without_pixels()
        for jid in finished[: max(0, len(finished) - FINISHED_JOBS_KEPT)]:
            del self._jobs[jid]


__all__ = ["Job", "JobQueue", "JobState", "UnknownTaskError"]
