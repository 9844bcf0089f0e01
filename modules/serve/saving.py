"""`save: frontend`: replicas save nothing; the front end writes each finished job's images and
grid through the engine's own saving functions (same names, formats, infotext and conditions)."""

from __future__ import annotations

from pathlib import Path

from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult
from modules.processing.engine import save_grid, save_sample
from modules.settings import Options


def save_result(result: GenerationResult, request: GenerationRequest, options: Options, outputs_dir: Path) -> None:
    if not request.save_images:
        return
    if options.samples_save:
        for image, params, text in zip(result.images, result.params, result.infotexts):
            result.saved_paths.append(str(save_sample(image, params, text, request, options, outputs_dir)))
    if result.grid is not None:  # the replica made it only where save_grid and grid_save asked for one
        result.grid_path = str(save_grid(result, request, options, outputs_dir))
