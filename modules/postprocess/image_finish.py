"""What happens to each generated image between decoding and saving, in A1111's order:

    face restoration (request.restore_faces)  ->  NSFW blacking (setting filter_nsfw)
    ->  extensions' postprocess_image hooks  ->  invisible watermark (setting add_invisible_watermark)

The engine calls `prepare` once when the job starts (a switched-on step whose model is missing
fails there, before any sampling, with a message naming the file to install) and
`before_extensions` / `after_extensions` around the hooks for every image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from modules.postprocess import watermark
from modules.postprocess.safety import black_like

if TYPE_CHECKING:
    from modules.extensions.hooks import OutputImage
    from modules.postprocess.services import Postprocessors
    from modules.processing.job_state import JobState

FACE_RESTORATION_KEY = "Face restoration"  # A1111's infotext key; its value is the model's name


def prepare(job: "JobState", post: "Postprocessors") -> None:
    """At the start of a job: fail fast when a switched-on step cannot run; the job's infotext."""
    request, options = job.request, job.options
    if request.restore_faces:
        model = options.face_restoration_model
        require_face_restorer(post, model)
        job.extra_params[FACE_RESTORATION_KEY] = model
    if options.filter_nsfw:
        post.safety.require()


def require_face_restorer(post: "Postprocessors", name: str) -> None:
    """Raise FaceRestorerMissingError (its message: the file to put in which folder, or why the
    file there fails) unless restorer `name` can run."""
    from modules.postprocess.face_restoration import FaceRestorerMissingError, UnknownFaceRestorerError

    items = post.face_restorers.items()
    info = next((i for i in items if i.name == name), None)
    if info is None:
        raise UnknownFaceRestorerError(name, [i.name for i in items])
    if not info.usable:
        raise FaceRestorerMissingError(name, info.message or f"face restorer {name} is not usable")


def before_extensions(job: "JobState", out: "OutputImage", post: "Postprocessors") -> None:
    """Face restoration, then the NSFW check (a flagged image becomes black, with a warning)."""
    request, options = job.request, job.options
    if request.restore_faces:
        # the job's options snapshot (override_settings included), not the stored settings
        out.image = post.face_restorers.restore(out.image, model=options.face_restoration_model,
                                                codeformer_weight=options.code_former_weight)
    if options.filter_nsfw and post.safety.flags([out.image])[0]:
        out.image = black_like(out.image)
        job.result.warnings.append(f"image {out.index + 1} (seed {out.seed}) was replaced by a black image: "
                                   "the NSFW filter (setting filter_nsfw) flagged it")


def after_extensions(job: "JobState", out: "OutputImage") -> None:
    """The invisible watermark, last before the image is saved."""
    out.image = mark(job, out.image)


def mark(job: "JobState", image: Image.Image) -> Image.Image:
    """`image` with the invisible watermark when the setting asks for it (grids too)."""
    if not job.options.add_invisible_watermark:
        return image
    if not watermark.can_mark(image):
        note = (f"invisible watermark not added: {image.width}x{image.height} is under the "
                f"{watermark.MIN_PIXELS:,} pixels it needs")
        if note not in job.result.warnings:
            job.result.warnings.append(note)
        return image
    return watermark.add_watermark(image)


__all__ = ["prepare", "before_extensions", "after_extensions", "mark", "require_face_restorer",
           "FACE_RESTORATION_KEY"]
