"""POST /sdapi/v1/extra-single-image and /extra-batch-images: A1111's Extras API over the one queue.

The request is checked before it waits in line (images decoded under the max_image_pixels
setting, upscaler and face restorer names, the result's size), so a bad one is a 422 naming its
field; the work itself is an `ExtrasTask` on the JobQueue, so it never shares the device with a
generation. As in A1111 the images come back with their "parameters" (when the input had one)
and "postprocessing" PNG text; A1111's API never saves them, `save_images: true` does (to
outputs/extras-images, like the Extras tab).
"""

from __future__ import annotations

import base64
from typing import Sequence

from starlette.concurrency import run_in_threadpool

from modules import heap, image_files
from modules.api import schemas
from modules.api.caller import LOCAL, Caller
from modules.api.errors import FieldError
from modules.api.service import decode_image, wait_for_job
from modules.app_context import AppContext
from modules.postprocess import extras
from modules.postprocess.extras import ExtrasInput, ExtrasInputError, ExtrasResult, ExtrasSave, ExtrasTask


class ExtrasService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def single_image(self, body: schemas.ExtrasSingleImageRequest,
                           caller: Caller = LOCAL) -> schemas.ExtrasSingleImageResponse:
        result = await self._run(body, [(body.image, "image")], caller)
        images = await run_in_threadpool(self._encode, result)
        return schemas.ExtrasSingleImageResponse(html_info=result.html_info, image=images[0] if images else None)

    async def batch_images(self, body: schemas.ExtrasBatchImagesRequest,
                           caller: Caller = LOCAL) -> schemas.ExtrasBatchImagesResponse:
        sources = [(item.data, ("imageList", i, "data")) for i, item in enumerate(body.imageList)]
        result = await self._run(body, sources, caller)
        images = await run_in_threadpool(self._encode, result)
        return schemas.ExtrasBatchImagesResponse(html_info=result.html_info, images=images)

    async def _run(self, body: schemas.ExtrasBaseRequest, sources: Sequence[tuple[str, object]],
                   caller: Caller) -> ExtrasResult:
        task = await run_in_threadpool(self.prepare, body, sources)
        try:
            job = self.ctx.queue.submit(task, owner=caller.user)
            return await wait_for_job(self.ctx.queue, job, caller)
        finally:
            big = any(i.image is not None and i.image.width * i.image.height >= heap.TRIM_AFTER_PIXELS
                      for i in task.inputs)
            task = job = None  # noqa: F841 - drop the decoded images before giving their memory back
            if big:
                await run_in_threadpool(heap.release_free_memory)

    def prepare(self, body: schemas.ExtrasBaseRequest, sources: Sequence[tuple[str, object]]) -> ExtrasTask:
        """Everything that can be refused, refused here (422 naming the field), before queueing."""
        request = body.extras_request()
        postprocess = self.ctx.postprocess
        try:
            extras.check_names(request, postprocess)
        except ExtrasInputError as err:
            raise FieldError.single(err.field, err.message) from None
        opts = self.ctx.settings.get()
        inputs = []
        for data, field in sources:
            image = decode_image(data, field, opts.max_image_pixels)
            try:
                extras.check_output_size(request, image.width, image.height)
            except ExtrasInputError as err:
                raise FieldError.single(err.field, f"{err.message} ({_where(field)})") from None
            inputs.append(ExtrasInput(image=image))  # no name: API results never replace a file
        save = ExtrasSave.from_options(opts, self.ctx.paths.outputs_dir) if body.save_images else None
        return ExtrasTask(request, inputs, postprocess, save=save, max_pixels=opts.max_image_pixels)

    def _encode(self, result: ExtrasResult) -> list[str]:
        """Each result in the samples format, with its text chunks (A1111's encode_pil_to_base64)."""
        opts = self.ctx.settings.get()
        return [base64.b64encode(image_files.encode_image(
                    out.image, opts.samples_format, out.parameters or "", quality=opts.jpeg_quality,
                    chunks=out.chunks).data).decode("ascii")
                for out in result.outputs if out.image is not None]


def _where(field: object) -> str:
    return ".".join(str(p) for p in field) if isinstance(field, tuple) else str(field)


__all__ = ["ExtrasService"]
