"""An extension that records what postprocess_image hooks are handed, for the tests of the
per-image steps around them (face restoration and NSFW before, the watermark after)."""

from __future__ import annotations

from PIL import Image

from modules.extensions.hooks import JobExtension


class SeenByHooks(JobExtension):
    name = "seen-by-hooks"
    always_on = True

    def __init__(self) -> None:
        self.images: list[Image.Image] = []

    def postprocess_image(self, job, image, args):
        self.images.append(image.image.copy())
