"""The evaluator's generator on the project's own engine (the default), so the bar the embedded
model must pass is measured through the code path users get: registry → engine → sampler."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from modules.models.options import ModelOptions
from modules.models.registry import ModelRegistry
from modules.paths import EMBEDDED_MODEL_DIR, Paths
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest, InpaintOptions, Mode
from modules.settings import SettingsStore

SAMPLER = "Euler a"


class EngineGenerator:
    """evaluate.FullGenerator on the engine: txt2img, img2img and inpaint."""

    def __init__(self, model_dir: str | Path = EMBEDDED_MODEL_DIR, data_dir: str | Path | None = None,
                 sampler: str = SAMPLER, with_extensions: bool = False) -> None:
        # An empty data dir: the embedded model is then the default, whatever models/ holds.
        paths = Paths(data_dir=Path(data_dir or tempfile.mkdtemp(prefix="sd-eval-")))
        registry = ModelRegistry(paths, ModelOptions(no_hashing=True), embedded_dir=Path(model_dir))
        settings = SettingsStore(None)
        extensions = None
        if with_extensions:  # the built-in extensions (Lora, ...) as the app loads them
            from modules.cmd_args import parse_args
            from modules.extensions.startup import load_extensions

            extensions = load_extensions(paths, settings, parse_args(["--data-dir", str(paths.data_dir)])).extension_set
        self.engine = Engine(registry, settings, paths, extensions=extensions)
        self.sampler = sampler

    def _run(self, **fields) -> Image.Image:
        request = GenerationRequest(sampler_name=self.sampler, save_images=False, **fields)
        return self.engine.generate(request).images[0]

    def __call__(self, prompt: str, negative_prompt: str, seed: int, cfg: float, steps: int) -> Image.Image:
        return self._run(prompt=prompt, negative_prompt=negative_prompt, seed=seed, cfg_scale=cfg, steps=steps)

    def generate_img2img(self, image: Image.Image, prompt: str, seed: int, strength: float, cfg: float,
                         steps: int) -> Image.Image:
        return self._run(mode=Mode.IMG2IMG, init_images=(image,), prompt=prompt, seed=seed,
                         denoising_strength=strength, cfg_scale=cfg, steps=steps)

    def generate_inpaint(self, image: Image.Image, mask: Image.Image, prompt: str, seed: int, cfg: float,
                         steps: int, strength: float = 1.0) -> Image.Image:
        return self._run(mode=Mode.INPAINT, init_images=(image,), inpaint=InpaintOptions(mask=mask, mask_blur=0),
                         prompt=prompt, seed=seed, denoising_strength=strength, cfg_scale=cfg, steps=steps)
