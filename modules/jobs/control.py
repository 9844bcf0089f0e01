"""What a running job shares with the outside: progress it reports, interrupt and skip it obeys.

The engine only sees `JobControl`; the queue, UI and API read the same object from other
threads, so every field is written under one lock. Under --ray a job runs in a replica: the front
end's JobControl `follow`s the replica's snapshots, and its listeners carry interrupt, skip and
"previews watched" to the replica (modules/serve/dispatch.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, Literal, Optional

from PIL import Image


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # taken out of the line before it ran (its client went away)

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class ProgressSnapshot:
    state: JobState = JobState.QUEUED
    step: int = 0  # steps finished in the current image batch
    total_steps: int = 0
    batch_index: int = 0  # which batch (of batch_count) is sampling
    batch_count: int = 0
    started_at: Optional[float] = None
    updated_at: Optional[float] = None
    preview: Optional[Image.Image] = None
    textinfo: str = ""
    interrupted: bool = False
    skipped: bool = False
    saved_paths: tuple[str, ...] = ()  # files this job has written so far (outputs)

    @property
    def fraction(self) -> float:
        """Progress over the whole job, 0..1, counting finished batches."""
        if self.state.finished:
            return 1.0
        if not self.total_steps or not self.batch_count:
            return 0.0
        done = self.batch_index * self.total_steps + self.step
        return min(1.0, done / (self.batch_count * self.total_steps))

    @property
    def eta_s(self) -> Optional[float]:
        frac = self.fraction
        if self.started_at is None or frac <= 0.0:
            return None
        elapsed = (self.updated_at or time.time()) - self.started_at
        return max(0.0, elapsed / frac - elapsed)


Signal = Literal["interrupt", "skip", "watch"]


class JobControl:
    """Thread-safe progress and stop flags for one job."""

    def __init__(self, preview_every: int = 0, task_id: str = "") -> None:
        self.task_id = task_id  # the queue's id for the job ("" outside a queue)
        self._lock = threading.Lock()
        self._snapshot = ProgressSnapshot()
        self._interrupt = threading.Event()
        self._skip = threading.Event()
        self.preview_every = preview_every  # 0 = no live previews
        # True: render previews only once someone asks for them (API jobs: most clients never poll
        # /progress, and a preview decode per few steps costs ~10% of a small job)
        self.previews_when_watched = False
        self._watched = threading.Event()
        self._listeners: list[Callable[[Signal], None]] = []

    def add_listener(self, listener: Callable[[Signal], None]) -> Callable[[], None]:
        """Call `listener` on each interrupt, skip and watch_previews; returns its remover."""
        with self._lock:
            self._listeners.append(listener)
        return lambda: self._remove_listener(listener)

    def _remove_listener(self, listener: Callable[[Signal], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _signal(self, signal: Signal) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(signal)

    # ---- read from other threads
    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return self._snapshot

    # ---- commands from other threads
    def interrupt(self) -> None:
        self._interrupt.set()
        self._update(interrupted=True, textinfo="Interrupted")
        self._signal("interrupt")

    def skip(self) -> None:
        self._skip.set()
        self._update(skipped=True)
        self._signal("skip")

    # ---- used by the engine
    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def take_skip(self) -> bool:
        """True once after each skip request: the engine ends the current batch."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False

    @property
    def skip_requested(self) -> bool:
        return self._skip.is_set()

    def watch_previews(self) -> None:
        """Someone shows this job's live previews: render them from the next due step on."""
        if not self._watched.is_set():
            self._watched.set()
            self._signal("watch")

    @property
    def previews_watched(self) -> bool:
        return self._watched.is_set()

    def wants_preview(self, step: int) -> bool:
        if self.preview_every <= 0 or step % self.preview_every != 0:
            return False
        return not self.previews_when_watched or self._watched.is_set()

    def start(self, batch_count: int, total_steps: int) -> None:
        now = time.time()
        self._update(state=JobState.RUNNING, batch_count=batch_count, total_steps=total_steps,
                     started_at=now, updated_at=now)

    def report_step(self, batch_index: int, step: int, total_steps: int,
                    preview: Optional[Callable[[], Image.Image]] = None) -> None:
        image = preview() if preview is not None and self.wants_preview(step) else None
        fields = dict(batch_index=batch_index, step=step, total_steps=total_steps, updated_at=time.time())
        if image is not None:
            fields["preview"] = image
        self._update(**fields)

    def report_saved(self, path: str) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, saved_paths=(*self._snapshot.saved_paths, path))

    def follow(self, remote: ProgressSnapshot) -> None:
        """Mirror the progress of this job's run elsewhere (a Ray replica); the finish stays ours."""
        fields = dict(step=remote.step, total_steps=remote.total_steps, batch_index=remote.batch_index,
                      batch_count=remote.batch_count, updated_at=time.time(), saved_paths=remote.saved_paths)
        if remote.state is JobState.RUNNING:
            fields["state"] = JobState.RUNNING
        if remote.textinfo and not self.interrupted:
            fields["textinfo"] = remote.textinfo
        if remote.preview is not None:
            fields["preview"] = remote.preview
        with self._lock:
            if self._snapshot.started_at is None and remote.state is JobState.RUNNING:
                fields["started_at"] = time.time()
            self._snapshot = replace(self._snapshot, **fields)

    def cancel(self, textinfo: str) -> None:
        """A queued job that will never run."""
        self._interrupt.set()
        self._update(state=JobState.CANCELLED, interrupted=True, updated_at=time.time(), textinfo=textinfo)

    def finish(self, failed: bool = False, textinfo: str = "") -> None:
        self._update(state=JobState.FAILED if failed else JobState.DONE, updated_at=time.time(),
                     textinfo=textinfo)

    def _update(self, **fields) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **fields)
