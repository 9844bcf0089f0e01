"""A torch-free stand-in engine and registry: the UI's own wiring tested in seconds.

The engine draws a flat colour from the seed (same seed → same image), reports steps with
previews, obeys interrupt/skip, writes real infotext and saves through modules.outputs, so
everything the browser sees is what the real engine would produce, only without a model.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Optional

from PIL import Image

from modules import infotext, outputs
from modules.app_context import AppContext
from modules.jobs.control import JobControl
from modules.jobs.queue import JobQueue
from modules.models.errors import UnknownModelError
from modules.paths import Paths
from modules.processing.request import GenerationRequest, GenerationResult, Mode, Timings
from modules.settings import SettingsStore

TITLES = ["fake-model.safetensors [0123456789]", "other/second.safetensors [abcdef0123]"]


class FakeRegistry:
    def __init__(self) -> None:
        self.current = TITLES[0]

    def checkpoints(self):
        return list(TITLES)

    def vaes(self):
        return ["fake-vae.safetensors"]

    def current_title(self):
        return self.current

    def select(self, name):
        if name not in TITLES:
            raise UnknownModelError.for_candidates("checkpoint", name, TITLES)
        self.current = name

    def refresh(self):
        pass


class FakeEngine:
    def __init__(self, registry: FakeRegistry, settings: SettingsStore, paths: Paths, step_s: float = 0.01):
        self.registry, self.settings, self.paths, self.step_s = registry, settings, paths, step_s

    def generate(self, request: GenerationRequest, control: JobControl) -> GenerationResult:
        opts = self.settings.get()
        title = request.checkpoint or self.registry.current
        if title not in TITLES:
            raise UnknownModelError.for_candidates("checkpoint", title, TITLES)
        width, height = request.width or 64, request.height or 64
        seed0 = request.seed if request.seed >= 0 else random.randrange(2**32)
        result = GenerationResult(width=width, height=height, sampler_name=request.sampler_name,
                                  scheduler=request.scheduler, model_title=title)
        t0 = time.time()
        control.start(request.batch_count, request.steps)
        for b in range(request.batch_count):
            if control.interrupted:
                result.interrupted = True
                break
            for step in range(1, request.steps + 1):
                if control.interrupted or control.take_skip():
                    break
                time.sleep(self.step_s)
                control.report_step(b, step, request.steps,
                                    lambda: Image.new("RGB", (width, height), (step * 10 % 255, 80, 80)))
            for i in range(request.batch_size):
                seed = seed0 + b * request.batch_size + i
                rng = random.Random(seed)
                color = tuple(rng.randrange(256) for _ in range(3))
                if request.init_images:
                    image = request.init_images[0].convert("RGB").resize((width, height))
                    image = Image.blend(image, Image.new("RGB", (width, height), color), request.denoising_strength)
                else:
                    image = Image.new("RGB", (width, height), color)
                params = infotext.ImageParams(prompt=request.prompt, negative_prompt=request.negative_prompt,
                                              seed=seed, subseed=request.subseed if request.subseed >= 0 else seed + 1,
                                              width=width, height=height, sampler_name=request.sampler_name,
                                              scheduler=request.scheduler, model_name=title.split(" [")[0].rsplit(".", 1)[0],
                                              model_hash=title.split("[")[-1].rstrip("]"))
                text = infotext.build_infotext(request, params)
                result.images.append(image)
                result.seeds.append(seed)
                result.subseeds.append(params.subseed)
                result.infotexts.append(text)
                if request.save_images and opts.samples_save:
                    path = outputs.save_image(image, kind=request.mode.value, seed=seed, prompt=request.prompt,
                                              infotext=text, settings=outputs.SaveSettings(),
                                              base_dir=self.paths.outputs_dir)
                    result.saved_paths.append(str(path))
        result.timings = Timings(total_s=time.time() - t0)
        return result


def fake_context(data_dir: Path, step_s: float = 0.01, **arg_overrides) -> AppContext:
    args = argparse.Namespace(listen=False, server_name=None, port=0, share=False, autolaunch=False,
                              gradio_auth=None, gradio_auth_path=None, theme=None, ui_config_file=None,
                              data_dir=str(data_dir))
    for k, v in arg_overrides.items():
        setattr(args, k, v)
    paths = Paths(data_dir=Path(data_dir))
    settings = SettingsStore(paths.config_file)
    registry = FakeRegistry()
    engine = FakeEngine(registry, settings, paths, step_s)
    queue = JobQueue(engine.generate)
    return AppContext(args=args, paths=paths, settings=settings, registry=registry, queue=queue)
