"""Interrupt, skip and "previews watched" for jobs that run in replicas.

The front end cannot call a chosen Serve replica, so it posts each signal here by task id and
the replica running that task polls it (a few times a second, off the denoising loop).
"""

from __future__ import annotations

from modules.serve.messages import Signals


class JobSignals:
    """A Ray actor (num_cpus=0): created by the front end, handed to every replica."""

    def __init__(self) -> None:
        self._signals: dict[str, Signals] = {}

    def send(self, task_id: str, signal: str) -> None:
        current = self._signals.get(task_id, Signals())
        if signal == "interrupt":
            current = Signals(True, current.skips, current.watched)
        elif signal == "skip":
            current = Signals(current.interrupt, current.skips + 1, current.watched)
        elif signal == "watch":
            current = Signals(current.interrupt, current.skips, True)
        self._signals[task_id] = current

    def take(self, task_id: str) -> Signals:
        """The task's signals; the skips are handed over once."""
        current = self._signals.get(task_id, Signals())
        if current.skips:
            self._signals[task_id] = Signals(current.interrupt, 0, current.watched)
        return current

    def forget(self, task_id: str) -> None:
        self._signals.pop(task_id, None)
