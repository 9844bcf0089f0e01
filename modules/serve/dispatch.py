"""The front end's side of --ray: a `generate` for the JobQueue's workers that runs each job on
a Ray Serve replica and mirrors it into the job's local JobControl.

- Seeds are fixed here (-1 drawn once), so a rerun after a replica died draws the same noise.
- The job is tagged with its checkpoint title (Serve's multiplexed model id): the router sends it
  to a replica that has that model loaded when one is free.
- Interrupt, skip and "previews watched" on the local JobControl go to the signals actor, which
  the replica running the task polls.
- A replica that dies mid-job (ActorDiedError and kin) costs one attempt: the job runs again on
  another replica, after a short backoff, up to `max_attempts` runs; then ReplicasUnavailableError
  (the API's 503). Files the lost run saved are removed once the rerun saved its own, so each
  image is on disk once; with `save: frontend` replicas save nothing and this process saves.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult
from modules.jobs.control import JobControl
from modules.processing.noise import pick_seed
from modules.serve.config import ServeConfig
from modules.serve.messages import JobFailed, JobOutcome, JobProgress, RemoteJob, ReplicaStarted, ReplicaView

log = logging.getLogger(__name__)

HISTORY_KEPT = 256


class ReplicasUnavailableError(RuntimeError):
    """Every run of a job lost its replica (the API answers 503 and the job is not lost silently)."""


class ReplicaLost(Exception):
    def __init__(self, why: str, saved_paths: tuple[str, ...]) -> None:
        super().__init__(why)
        self.saved_paths = saved_paths


@dataclass
class RemoteEngine:
    handle: Any  # the EngineReplica deployment's DeploymentHandle
    signals: Any  # the JobSignals actor
    config: ServeConfig
    settings: Any = None  # SettingsStore, registry and paths: bound by create_context (`bind`)
    registry: Any = None
    paths: Any = None
    backoff_s: float = 1.0
    _running: dict[str, ReplicaView] = field(default_factory=dict)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_KEPT))  # ReplicaView per run
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def workers(self) -> int:
        """Jobs that run at once: one per replica (the front end's JobQueue worker count)."""
        return max(1, self.config.max_replicas or 1)

    def bind(self, settings, registry, paths) -> "RemoteEngine":
        self.settings, self.registry, self.paths = settings, registry, paths
        return self

    def running(self) -> list[ReplicaView]:
        with self._lock:
            return list(self._running.values())

    # ------------------------------------------------------------------ the JobQueue's generate
    def generate(self, request: GenerationRequest, control: JobControl) -> GenerationResult:
        task_id = control.task_id or f"task(ray-{random.getrandbits(48):012x})"
        request = self._for_replicas(request)
        sent = request.model_copy(update={"save_images": False}) if self.config.save == "frontend" else request
        options = self.settings.get()
        lost_files: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._run_once(task_id, sent, options, control, attempt)
                break
            except ReplicaLost as lost:
                lost_files.extend(lost.saved_paths)
                log.warning("%s: its replica was lost on run %d of %d (%s)", task_id, attempt,
                            self.config.max_attempts, lost)
                if attempt >= self.config.max_attempts:
                    raise ReplicasUnavailableError(
                        f"{task_id}: the replica running it was lost {attempt} time(s) ({lost}); gave up after "
                        f"{self.config.max_attempts} runs (max_attempts)") from None
                if control.interrupted:
                    return GenerationResult(request=request, interrupted=True)
                time.sleep(self.backoff_s * attempt)
        self._keep_one_copy(lost_files, result, request, options)
        return result

    def _for_replicas(self, request: GenerationRequest) -> GenerationRequest:
        """Seeds fixed and the checkpoint named (the multiplexed model id)."""
        update: dict[str, Any] = {"seed": pick_seed(request.seed), "subseed": pick_seed(request.subseed)}
        if request.checkpoint is None:
            title = self.registry.current_title() if self.registry is not None else None
            if title:
                update["checkpoint"] = title
        return request.model_copy(update=update)

    def _run_once(self, task_id: str, request: GenerationRequest, options, control: JobControl,
                  attempt: int) -> GenerationResult:
        job = RemoteJob(task_id=task_id, request=request, options=options, attempt=attempt,
                        preview_every=control.preview_every, previews_when_watched=control.previews_when_watched)
        self.signals.forget.remote(task_id)  # a lost run's skips are not the rerun's
        for signal, on in (("interrupt", control.interrupted), ("watch", control.previews_watched)):
            if on:
                self.signals.send.remote(task_id, signal)
        remove_listener = control.add_listener(lambda signal: self.signals.send.remote(task_id, signal))
        saved: tuple[str, ...] = ()
        try:
            stream = self.handle.options(stream=True, multiplexed_model_id=request.checkpoint or "").run.remote(job)
            for event in stream:
                if isinstance(event, ReplicaStarted):
                    self._started(task_id, event, request.checkpoint)
                elif isinstance(event, JobProgress):
                    saved = event.snapshot.saved_paths
                    control.follow(event.snapshot)
                elif isinstance(event, JobOutcome):
                    return event.result
                elif isinstance(event, JobFailed):
                    raise event.error
            raise ReplicaLost("the replica's stream ended without a result", saved)
        except Exception as exc:
            if _is_replica_loss(exc):
                raise ReplicaLost(f"{type(exc).__name__}", saved) from None
            raise
        finally:
            remove_listener()
            self.signals.forget.remote(task_id)
            with self._lock:
                self._running.pop(task_id, None)

    def _started(self, task_id: str, event: ReplicaStarted, model: Optional[str]) -> None:
        view = ReplicaView(task_id=task_id, replica_id=event.replica_id, pid=event.pid, node=event.node,
                           attempt=event.attempt, model=model)
        with self._lock:
            self._running[task_id] = view
            self.history.append(view)

    # ------------------------------------------------------------------ saved files
    def _keep_one_copy(self, lost_files: list[str], result: GenerationResult, request: GenerationRequest,
                       options) -> None:
        if self.config.save == "frontend":
            from modules.serve.saving import save_result

            save_result(result, request, options, self.paths.outputs_dir)
            return
        kept = set(result.saved_paths) | ({result.grid_path} if result.grid_path else set())
        for name in lost_files:
            if name not in kept:
                _remove_inside(Path(name), self.paths.outputs_dir)


def _remove_inside(path: Path, root: Path) -> None:
    """Remove a lost run's file (and its .txt sidecar), never anything outside the outputs folder."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        log.warning("not removing %s: outside %s", path, root)
        return
    for candidate in (path, path.with_suffix(".txt")):
        candidate.unlink(missing_ok=True)


def _is_replica_loss(exc: BaseException) -> bool:
    import ray.exceptions as rex

    return isinstance(exc, (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError))
