"""Cells of a plot -> one GenerationResult: grids first, then (optionally) the cell images, each with
its infotext, as A1111's scripts return them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from PIL import Image

from modules import infotext as infotext_mod
from modules.extensions.selectable import ScriptRun
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult, ImageParams


@dataclass
class CellResult:
    """The first image of one cell's sub-job (None: not run, interrupted or failed)."""

    image: Optional[Image.Image] = None
    params: Optional[ImageParams] = None
    infotext: str = ""
    path: Optional[str] = None
    request: Optional[GenerationRequest] = None
    model_title: str = ""


@dataclass
class PlotOutput:
    grids: list[tuple[Image.Image, ImageParams, str, Optional[str]]] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)


def cell_from(result: GenerationResult, request: GenerationRequest) -> CellResult:
    if not result.images:
        return CellResult(request=request)
    return CellResult(result.images[0], result.params[0], result.infotexts[0],
                      result.saved_paths[0] if result.saved_paths else None, result.request or request,
                      result.model_title)


def blank_like(cells: list[CellResult], width: int, height: int) -> Image.Image:
    """A black cell for one that did not run, the size of the ones that did."""
    size = next((c.image.size for c in cells if c.image is not None), (width, height))
    return Image.new("RGB", size)


def grid_params(first: CellResult, fields: dict[str, Any]) -> tuple[ImageParams, str]:
    """The grid's record: the first cell's, with the script's fields (A1111's "Script: ..., X Type: ...")."""
    params = replace(first.params, extra={**first.params.extra, **fields})
    return params, infotext_mod.build_infotext(first.request, params)


def assemble(run: ScriptRun, output: PlotOutput, include_images: bool) -> GenerationResult:
    """Grids first (their count in `result.grids`), then the cell images when asked for."""
    result = GenerationResult(request=run.request, interrupted=run.interrupted)
    done = [c for c in output.cells if c.image is not None]
    for grid, params, text, _path in output.grids:
        result.add_image(grid, params, text)
    result.grids = len(output.grids)
    if include_images:
        for cell in done:
            result.add_image(cell.image, cell.params, cell.infotext)
    paths = [g[3] for g in output.grids] + ([c.path for c in done] if include_images else [])
    result.saved_paths = [p for p in paths if p] if all(paths) else []
    first = done[0] if done else None
    if first is not None:
        result.width, result.height = first.params.width, first.params.height
        result.sampler_name, result.scheduler = first.params.sampler_name, first.params.scheduler
        result.model_title = first.model_title
        result.request = first.request or run.request
    return result


__all__ = ["CellResult", "PlotOutput", "cell_from", "blank_like", "grid_params", "assemble"]
