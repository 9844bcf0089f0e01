"""What a running job shares with the outside: progress it reports, interrupt and skip it obeys.

The engine only sees `JobControl`; the queue, UI and API read the same object from other
threads, so every field is written under one lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, Optional

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


class JobControl:
    """Thread-safe progress and stop flags for one job."""

    def __init__(self, preview_every: int = 0) -> None:
        self._lock = threading.Lock()
        self._snapshot = ProgressSnapshot()
        self._interrupt = threading.Event()
        self._skip = threading.Event()
        self.preview_every = preview_every  # 0 = no live previews
        # True: render previews only once someone asks for them (API jobs: most clients never poll
        # /progress, and a preview decode per few steps costs ~10% of a small job)
        self.previews_when_watched = False
        self._watched = threading.Event()

    # ---- read from other threads
    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return self._snapshot

    # ---- commands from other threads
    def interrupt(self) -> None:
        self._interrupt.set()
        self._update(interrupted=True, textinfo="Interrupted")

    def skip(self) -> None:
        self._skip.set()
        self._update(skipped=True)

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
        self._watched.set()

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
