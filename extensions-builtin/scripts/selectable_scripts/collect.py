"""Results of scripts without a plot (prompts from file, SD upscale, loopback, outpainting):
images the script made itself (a combined upscale, an outpainted canvas) or sub-job images whose
infotext the script extends, saved where the tab's samples go, collected into one
GenerationResult with `saved_paths` kept in step with `images` (or empty)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Optional

from PIL import Image

from modules import grids, infotext as infotext_mod
from modules.extensions.selectable import ScriptRun
from modules.generation.request import GenerationRequest, Mode
from modules.generation.result import GenerationResult, ImageParams


def with_fields(params: ImageParams, request: GenerationRequest, fields: Mapping[str, Any],
                **changes: Any) -> tuple[ImageParams, str]:
    """`params` with the script's infotext fields (A1111's extra_generation_params) and changes
    (width, height...), and the infotext rendered from them."""
    params = replace(params, extra={**params.extra, **fields}, **changes)
    return params, infotext_mod.build_infotext(request, params)


def save_sample(run: ScriptRun, image: Image.Image, params: ImageParams, text: str,
                request: GenerationRequest) -> Optional[str]:
    """Save an image the script made where the tab's samples go, when the request saves images and
    the samples_save setting is on (A1111's scripts save their combined images the same way)."""
    opts = run.services.settings.get() if run.services.settings is not None else None
    if opts is None or not (run.request.save_images and opts.samples_save):
        return None
    from modules import outputs
    from modules.processing.engine import save_settings

    path = outputs.save_image(image, kind="txt2img" if request.mode is Mode.TXT2IMG else "img2img",
                              seed=params.seed, prompt=params.prompt, infotext=text,
                              settings=save_settings(opts, request), base_dir=run.services.paths.outputs_dir,
                              params=params, request=request)
    return str(path)


class Collector:
    """Builds the script's GenerationResult: grids first (`add_grid`), then images."""

    def __init__(self, run: ScriptRun) -> None:
        self.run = run
        self.result = GenerationResult(request=run.request)
        self._paths: list[Optional[str]] = []

    def add(self, image: Image.Image, params: ImageParams, text: str, path: Optional[str],
            request: Optional[GenerationRequest] = None) -> None:
        self.result.add_image(image, params, text)
        self._paths.append(path)
        if len(self.result.images) - self.result.grids == 1:  # the first image describes the job
            self.result.width, self.result.height = params.width, params.height
            self.result.sampler_name, self.result.scheduler = params.sampler_name, params.scheduler
            if request is not None:
                self.result.request = request

    def add_grid(self, image: Image.Image, params: ImageParams, text: str, path: Optional[str]) -> None:
        """A grid goes before every image (A1111's index_of_first_image)."""
        n = self.result.grids
        for name, value in (("images", image), ("params", params), ("seeds", params.seed),
                            ("subseeds", params.subseed), ("prompts", params.prompt),
                            ("negative_prompts", params.negative_prompt), ("infotexts", text)):
            getattr(self.result, name).insert(n, value)
        self._paths.insert(n, path)
        self.result.grids += 1

    def add_with_grid(self, shown: list[tuple[Image.Image, ImageParams, str, Optional[str], GenerationRequest]],
                      rows: Optional[int] = None) -> None:
        """Pictures (image, params, infotext, saved path, request) after a grid of them when there is
        more than one; the grid takes the first picture's parameters, as A1111's does."""
        if len(shown) > 1:
            grid = grids.image_grid([item[0] for item in shown], rows=rows)
            _, params, text, _, sub = shown[0]
            self.add_grid(grid, params, text, self.run.save_grid(grid, params, text, sub))
        for image, params, text, path, sub in shown:
            self.add(image, params, text, path, sub)

    def add_result(self, sub: GenerationResult, request: GenerationRequest) -> None:
        """Every image of a sub-job as it is (already saved by the engine when it saves)."""
        paths: list[Optional[str]] = list(sub.saved_paths) if len(sub.saved_paths) == len(sub.images) else []
        paths += [None] * (len(sub.images) - len(paths))
        for image, params, text, path in zip(sub.images, sub.params, sub.infotexts, paths):
            self.add(image, params, text, path, sub.request or request)
        self.note(sub)

    def note(self, sub: GenerationResult) -> None:
        """A sub-job's model title and warnings (for images the script composed from it)."""
        if sub.model_title and not self.result.model_title:
            self.result.model_title = sub.model_title
        for warning in sub.warnings:
            if warning not in self.result.warnings:
                self.result.warnings.append(warning)

    def finish(self) -> GenerationResult:
        self.result.saved_paths = [p for p in self._paths if p] if self._paths and all(self._paths) else []
        self.result.interrupted = self.result.interrupted or self.run.interrupted
        return self.result


__all__ = ["Collector", "save_sample", "with_fields"]
