"""The state of one generation job as it runs through the engine's phases.

`JobState` lives for the whole job; `BatchState` for one batch of `batch_size` images. Each engine
phase is a small function that reads and writes these, and extension hooks see the same objects
(A1111 scripts see them through the `p` adapter). Lists named `all_*` hold one entry per image of
the job, in job order, as A1111's `p.all_prompts` / `p.all_seeds` do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from modules.jobs.control import JobControl
    from modules.models.loaded import LoadedModel
    from modules.processing.composable import ComposableConditioning
    from modules.processing.conditioning import EmbeddingTable, ScheduledConditioning
    from modules.processing.extra_networks import ExtraNetworkCall
    from modules.processing.hires import HiresPlan
    from modules.generation.request import GenerationRequest
    from modules.generation.result import GenerationResult
    from modules.processing.samplers import SamplerChoice
    from modules.settings import Options


@dataclass
class PhaseClock:
    """Wall time spent per phase of a job."""

    spent: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.spent[phase] = self.spent.get(phase, 0.0) + now - since
        return now


@dataclass
class JobState:
    request: "GenerationRequest"  # a `process` hook may replace it (model_copy); it stays validated
    options: "Options"
    control: "JobControl"
    result: "GenerationResult"
    model: Optional["LoadedModel"] = None
    sampler: Optional["SamplerChoice"] = None
    width: int = 0
    height: int = 0
    hires: Optional["HiresPlan"] = None  # txt2img's second pass (request.hires resolved); None = off
    all_prompts: list[str] = field(default_factory=list)  # after styles, extra-network tags kept (infotext)
    all_negative_prompts: list[str] = field(default_factory=list)
    all_seeds: list[int] = field(default_factory=list)
    all_subseeds: list[int] = field(default_factory=list)
    extra_params: dict[str, Any] = field(default_factory=dict)  # job-wide infotext fields from extensions
    extension_data: dict[str, Any] = field(default_factory=dict)  # scratch space, keyed by extension name
    text_encoder_state: list[Any] = field(default_factory=list)  # see BatchState.text_encoder_state
    # Textual-inversion trigger words the prompts may use (set by the extension that reads embedding
    # files); the encoder splices their vectors in and keys its cache on the table's identity.
    embeddings: Optional["EmbeddingTable"] = None
    clock: PhaseClock = field(default_factory=PhaseClock)

    @property
    def batch_size(self) -> int:
        return self.request.batch_size

    @property
    def batch_count(self) -> int:
        return self.request.batch_count


@dataclass
class BatchState:
    index: int  # which batch of the job
    first_image: int  # job index of its first image
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]  # as written in infotext
    negative_prompts: list[str]
    # What the text encoder sees: the prompts with extra-network tags (<lora:...>) taken out.
    encoder_prompts: list[str] = field(default_factory=list)
    encoder_negative_prompts: list[str] = field(default_factory=list)
    extra_networks: list["ExtraNetworkCall"] = field(default_factory=list)  # tags of this batch's prompts
    # What extensions patched into the text encoder(s) for this batch (LoRA weights, textual
    # inversion vectors), as hashable identities: cached conditioning is kept apart per state.
    # Job-wide patches (patch_model) add theirs to JobState.text_encoder_state.
    text_encoder_state: list[Any] = field(default_factory=list)
    cond: Optional["ComposableConditioning"] = None  # the prompts split on AND (one group without AND)
    uncond: Optional["ScheduledConditioning"] = None
    latents: Optional["torch.Tensor"] = None  # after sampling
    images: list["Image.Image"] = field(default_factory=list)  # after decoding

    @property
    def size(self) -> int:
        return len(self.seeds)
