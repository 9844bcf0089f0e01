"""The one job queue: UI and API submit requests here, one worker runs them in order.

A failing job resolves its own future with the exception and the worker moves on, so one bad
request never stops the others.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

from modules.jobs.control import JobControl, JobState, ProgressSnapshot
from modules.processing.request import GenerationRequest, GenerationResult

GenerateFn = Callable[[GenerationRequest, JobControl], GenerationResult]

FINISHED_JOBS_KEPT = 256  # so a client can still read progress/result of a recent task


@dataclass
class Job:
    id: str
    request: GenerationRequest
    control: JobControl
    future: Future = field(default_factory=Future)
    submitted_at: float = field(default_factory=time.time)

    def result(self, timeout: Optional[float] = None) -> GenerationResult:
        return self.future.result(timeout)


class UnknownTaskError(KeyError):
    pass


class JobQueue:
    def __init__(self, generate: GenerateFn, preview_every: int = 0) -> None:
        self._generate = generate
        self._preview_every = preview_every
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._current: Optional[Job] = None
        self._closed = False
        self._counter = itertools.count()
        self._worker = threading.Thread(target=self._run, name="job-queue-worker", daemon=True)
        self._worker.start()

    # ---- submitting
    def submit(self, request: GenerationRequest, task_id: Optional[str] = None,
               preview_every: Optional[int] = None) -> Job:
        every = self._preview_every if preview_every is None else preview_every
        job = Job(id=task_id or f"task({uuid.uuid4().hex[:15]})", request=request,
                  control=JobControl(preview_every=every))
        with self._lock:
            if self._closed:
                raise RuntimeError("the job queue is shut down")
            if job.id in self._jobs and not self._jobs[job.id].future.done():
                raise ValueError(f"task id {job.id!r} is already queued or running")
            self._jobs[job.id] = job
            self._jobs.move_to_end(job.id)
            self._pending.append(job)
            self._lock.notify_all()
        return job

    def run(self, request: GenerationRequest, task_id: Optional[str] = None) -> GenerationResult:
        """Submit and wait: for callers that want the result in the same thread."""
        return self.submit(request, task_id).result()

    # ---- reading
    def get(self, task_id: str) -> Job:
        with self._lock:
            if task_id not in self._jobs:
                raise UnknownTaskError(task_id)
            return self._jobs[task_id]

    @property
    def current(self) -> Optional[Job]:
        with self._lock:
            return self._current

    def position(self, task_id: str) -> int:
        """0 while running, n when n jobs run or wait before it, -1 once finished."""
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None:
                raise UnknownTaskError(task_id)
            if job is self._current:
                return 0
            if job.future.done():
                return -1
            ahead = list(self._pending).index(job)
            return ahead + (1 if self._current is not None else 0)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def progress(self, task_id: Optional[str] = None) -> Optional[ProgressSnapshot]:
        job = self._target(task_id)
        return job.control.snapshot() if job is not None else None

    def _target(self, task_id: Optional[str]) -> Optional[Job]:
        """The named task, or the running one when no id is given."""
        return self.current if task_id is None else self.get(task_id)

    # ---- commands
    def set_preview_every(self, steps: int) -> None:
        """Live-preview interval for jobs submitted from now on (0 = off)."""
        self._preview_every = max(0, steps)

    def interrupt(self, task_id: Optional[str] = None) -> bool:
        """Interrupt one task (running or queued) or, with no id, the running one."""
        job = self._target(task_id)
        if job is not None:
            job.control.interrupt()
        return job is not None

    def skip(self, task_id: Optional[str] = None) -> bool:
        job = self._target(task_id)
        if job is not None:
            job.control.skip()
        return job is not None

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            for job in self._pending:
                job.future.cancel()
            self._pending.clear()
            self._lock.notify_all()
        self._worker.join(timeout)

    # ---- the worker
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                self._current = job
            self._execute(job)
            with self._lock:
                self._current = None
                self._forget_old_jobs()

    def _execute(self, job: Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            result = self._generate(job.request, job.control)
        except BaseException as exc:  # the worker must outlive any job
            job.control.finish(failed=True, textinfo=f"{type(exc).__name__}: {exc}")
            job.future.set_exception(exc)
        else:
            job.control.finish(textinfo="Interrupted" if result.interrupted else "Done")
            job.future.set_result(result)

    def _forget_old_jobs(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.future.done()]
        for jid in finished[: max(0, len(finished) - FINISHED_JOBS_KEPT)]:
            del self._jobs[jid]


__all__ = ["Job", "JobQueue", "JobState", "UnknownTaskError"]
