"""Work for the one JobQueue that is not a generation (the Extras tab's upscale / face restore).

It runs on the queue's single worker like every generation, so the device is never used by two
jobs at once, and it gets the same task ids, owners, /progress, interrupt and queue bound. The
worker calls `run(control)` instead of the engine; the task reports progress through `control`
and stops between images when it is interrupted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from modules.jobs.control import JobControl


class QueueTask(ABC):
    # What /progress reports before the task has started (a generation's batch count and steps).
    batch_count: int = 1
    steps: int = 1

    @abstractmethod
    def run(self, control: JobControl) -> Any:
        """Do the work; the result has an `interrupted` attribute (read by the queue)."""

    def without_pixels(self) -> "QueueTask":
        """The record a finished job keeps; drop input images (megabytes each) here."""
        return self


__all__ = ["QueueTask"]
