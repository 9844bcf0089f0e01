"""`save: frontend`: replicas save nothing; the front end writes each finished job's images and
grid with the same names, formats and infotext the engine would have used."""

from __future__ import annotations

from pathlib import Path

from modules import outputs
from modules.generation.request import GenerationRequest, Mode
from modules.generation.result import GenerationResult
from modules.processing.engine import save_settings
from modules.settings import Options


def save_result(result: GenerationResult, request: GenerationRequest, options: Options, outputs_dir: Path) -> None:
    if not (request.save_images and options.samples_save):
        return
    kind = "txt2img" if request.mode is Mode.TXT2IMG else "img2img"
    settings = save_settings(options, request)
    for image, params, text in zip(result.images, result.params, result.infotexts):
        path = outputs.save_image(image, kind=kind, seed=params.seed, prompt=params.prompt, infotext=text,
                                  settings=settings, base_dir=outputs_dir, params=params, request=request)
        result.saved_paths.append(str(path))
    if result.grid is not None and request.save_grid and options.grid_save and result.params:
        path = outputs.save_image(result.grid, kind=kind, seed=result.seeds[0], prompt=request.prompt,
                                  infotext=result.infotexts[0], settings=settings, base_dir=outputs_dir,
                                  is_grid=True, params=result.params[0], request=request)
        result.grid_path = str(path)
