"""What the front end and a replica send each other for one job (pickled by Ray)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult
from modules.jobs.control import ProgressSnapshot
from modules.settings import Options


@dataclass(frozen=True)
class RemoteJob:
    task_id: str
    request: GenerationRequest  # seeds already fixed by the front end, so a rerun draws the same noise
    options: Options  # the front end's settings when the job started (replicas adopt them)
    attempt: int = 1
    preview_every: int = 0
    previews_when_watched: bool = False


@dataclass(frozen=True)
class ReplicaStarted:
    replica_id: str
    pid: int
    node: str
    attempt: int


@dataclass(frozen=True)
class JobProgress:
    snapshot: ProgressSnapshot  # its preview is sent only when it changed (None otherwise)


@dataclass(frozen=True)
class JobOutcome:
    result: GenerationResult


@dataclass(frozen=True)
class JobFailed:
    """The job itself failed (bad input, a model that cannot load...): not retried."""
    error: BaseException


@dataclass(frozen=True)
class Signals:
    interrupt: bool = False
    skips: int = 0  # skip requests not yet taken by the replica
    watched: bool = False


@dataclass(frozen=True)
class ReplicaView(ReplicaStarted):
    """One run of a job as the front end saw it start (RemoteEngine.running / history)."""
    task_id: str
    model: Optional[str]
