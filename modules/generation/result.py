"""What a job gives back: images in job order, each with its structured parameters.

`ImageParams` is the per-image record infotext is rendered from; front ends render text only at
their edges (files, API responses, the UI) from these records, never by parsing text back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

from PIL import Image

if TYPE_CHECKING:
    from modules.generation.request import GenerationRequest


@dataclass(frozen=True)
class ImageParams:
    """What one image's infotext needs beyond the request: the values resolved for that image.

    `negative_prompt` is after styles; `scheduler` is the resolved schedule name ("Karras", not
    "Automatic"); `extra` holds extension parameters ("Lora hashes", ...) written after the core
    keys in insertion order; a value of None drops the key, a key equal to its value is written
    alone (A1111's flag form). `version` is written last as "Version: ..." when given.
    """

    prompt: str
    negative_prompt: str
    seed: int
    subseed: int
    width: int
    height: int
    sampler_name: str
    scheduler: str
    model_name: Optional[str] = None
    model_hash: Optional[str] = None  # short hash, as A1111 writes it
    vae_name: Optional[str] = None
    vae_hash: Optional[str] = None
    version: Optional[str] = None
    extra: Mapping[str, Any] = field(default_factory=dict)



@dataclass(frozen=True)
class Timings:
    total_s: float = 0.0
    load_s: float = 0.0
    encode_s: float = 0.0
    sample_s: float = 0.0
    decode_s: float = 0.0
    save_s: float = 0.0


@dataclass
class GenerationResult:
    """Images in job order, each with its parameters and the infotext that reproduces it.

    `params[i]` is image i's structured record; `infotexts[i]` is that record rendered once, by the
    engine, for the files it writes (front ends reuse it instead of rendering again). `request` is
    the request as the job finally ran it (extensions may have changed it).
    """

    images: list[Image.Image] = field(default_factory=list)
    params: list[ImageParams] = field(default_factory=list)
    request: Optional["GenerationRequest"] = None
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    saved_paths: list[str] = field(default_factory=list)
    grid: Optional[Image.Image] = None
    # How many of `images` at the front are grids (selectable scripts: X/Y/Z plot, prompt matrix
    # return their grids as images, each with its own infotext); A1111's index_of_first_image.
    grids: int = 0
    grid_path: Optional[str] = None
    width: int = 0
    height: int = 0
    sampler_name: str = ""
    scheduler: str = ""
    model_title: str = ""
    warnings: list[str] = field(default_factory=list)
    # Pictures an extension shows beside the results (ControlNet's detected maps): not generations,
    # so no params or infotext and not in `images`; the API appends them to its `images` after the
    # generations, as A1111 does, and the UI's gallery shows them last.
    extra_images: list[Image.Image] = field(default_factory=list)
    interrupted: bool = False
    timings: Timings = field(default_factory=Timings)

    @property
    def seed(self) -> int:
        return self.seeds[0] if self.seeds else -1

    def add_image(self, image: Image.Image, params: ImageParams, infotext: str) -> None:
        """Append one finished image; every per-image list stays in step."""
        self.images.append(image)
        self.params.append(params)
        self.seeds.append(params.seed)
        self.subseeds.append(params.subseed)
        self.prompts.append(params.prompt)
        self.negative_prompts.append(params.negative_prompt)
        self.infotexts.append(infotext)
