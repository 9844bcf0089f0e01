"""Submitting a request to the shared JobQueue and following it from one browser session.

`follow` submits and yields `JobUpdate`s until the job ends; handlers turn them into progress bar
HTML and live preview images. The job id goes into the session's gr.State, so Interrupt and Skip
in one browser tab only ever touch that tab's own job.
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional

from modules.jobs.control import JobState, ProgressSnapshot
from modules.jobs.queue import Job, UnknownTaskError
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult

if TYPE_CHECKING:
    from modules.app_context import AppContext

POLL_S = 0.25  # how often a session looks at its job; cheap: reads one snapshot under a lock


@dataclass
class JobUpdate:
    job: Job
    snapshot: ProgressSnapshot
    position: int  # 0 running, n waiting behind n jobs, -1 finished
    new_preview: bool  # the snapshot carries a preview this session has not shown yet

    @property
    def done(self) -> bool:
        return self.job.future.done()


def preview_every(ctx: "AppContext") -> int:
    """Live preview period from the settings as they are now (changes apply to the next job)."""
    opts = ctx.settings.get()
    if not opts.live_previews_enable:
        return 0
    return max(0, int(opts.show_progress_every_n_steps))


def submit(ctx: "AppContext", request: GenerationRequest) -> Job:
    return ctx.queue.submit(request, preview_every=preview_every(ctx))


def follow(ctx: "AppContext", job: Job, poll_s: float = POLL_S) -> Iterator[JobUpdate]:
    """Yield progress until the job is finished (the last update has done=True).

    If the consumer stops early (the browser went away and gradio closed the generator), the job
    is interrupted so it does not hold the device for nobody.
    """
    last_preview = None
    finished = False
    try:
        while True:
            done = job.future.done()
            snap = job.control.snapshot()
            try:
                position = ctx.queue.position(job.id)
            except UnknownTaskError:
                position = -1
            fresh = snap.preview is not None and snap.preview is not last_preview
            if fresh:
                last_preview = snap.preview
            yield JobUpdate(job, snap, position, fresh)
            if done:
                finished = True
                return
            futures.wait([job.future], timeout=poll_s)  # wakes at once when the job ends
    finally:
        if not finished and not job.future.done():
            job.control.interrupt()


def interrupt(ctx: "AppContext", job_id: Optional[str]) -> bool:
    if not job_id:
        return False
    try:
        return ctx.queue.interrupt(job_id)
    except UnknownTaskError:
        return False


def skip(ctx: "AppContext", job_id: Optional[str]) -> bool:
    if not job_id:
        return False
    try:
        return ctx.queue.skip(job_id)
    except UnknownTaskError:
        return False


# ---------------------------------------------------------------------------------------------
# progress bar


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def progress_text(update: JobUpdate) -> str:
    snap, pos = update.snapshot, update.position
    if snap.state is JobState.QUEUED and pos > 0:
        return f"Waiting in queue: {pos} job{'s' if pos != 1 else ''} ahead"
    if snap.state is JobState.QUEUED:
        return "Starting..."
    if snap.interrupted and snap.state is JobState.RUNNING:
        return "Interrupting..."
    parts = [f"{int(snap.fraction * 100)}%"]
    if snap.total_steps:
        parts.append(f"Step {min(snap.step, snap.total_steps)}/{snap.total_steps}")
    if snap.batch_count > 1:
        parts.append(f"Batch {snap.batch_index + 1}/{snap.batch_count}")
    eta = snap.eta_s
    if eta is not None:
        parts.append(f"ETA: {_duration(eta)}")
    return " · ".join(parts)


def progress_html(update: Optional[JobUpdate], label: str = "") -> str:
    """A1111-like bar: a filled strip with the percent, step, batch and ETA written on it."""
    if update is None:
        fraction, text = 0.0, label or "Waiting..."
    else:
        fraction, text = update.snapshot.fraction, progress_text(update)
        if label:
            text = f"{label} · {text}"
    width = max(0.0, min(1.0, fraction)) * 100
    return (f"<div class='sd-progress' role='progressbar' aria-valuenow='{width:.0f}' "
            f"aria-valuemin='0' aria-valuemax='100'><div class='sd-progress-bar' style='width:{width:.1f}%'></div>"
            f"<div class='sd-progress-text'>{text}</div></div>")


def wait_result(job: Job) -> GenerationResult:
    return job.future.result()
