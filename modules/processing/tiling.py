"""A1111's seamless "Tiling": the picture wraps around, so copies of it laid side by side meet
without a seam.

Every `Conv2d` of the UNet and the VAE pads circularly (reads the opposite edge) instead of with
zeros. The switch is made on a per-job copy of those two models, never on the shared ones: the
copy has its own module objects but the very same parameter and buffer tensors (no weight is
copied), so the shared model stays untouched while the job runs and afterwards, and anything
patching weights in place for the job (LoRA) reaches both.

The job's model is a `TiledModel`: the loaded model with the copies standing in for `unet` and
`vae`. Its `pipe` is still the shared pipeline, so what is cached per pipeline (the text encoder's
conditioning, LoRA's layer map) is reused, and the copies die with the job.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from modules.models.loaded import LoadedModel

CIRCULAR = "circular"


def _shared_objects(modules: Iterable[torch.nn.Module]) -> dict[int, Any]:
    """A deepcopy memo that keeps tensors and accelerate's offload hooks (with their weight maps)
    shared: only the module objects are new."""
    memo: dict[int, Any] = {}
    for root in modules:
        for tensor in (*root.parameters(), *root.buffers()):
            memo[id(tensor)] = tensor
        for module in root.modules():
            hook = getattr(module, "_hf_hook", None)  # --medvram / --lowvram: the hook moves weights
            if hook is not None:
                memo[id(hook)] = hook
    return memo


def circular_copy(module: torch.nn.Module, shared: dict[int, Any]) -> torch.nn.Module:
    """`module` as new module objects over the same tensors, its convolutions padding circularly."""
    clone = copy.deepcopy(module, dict(shared))
    for layer in clone.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.padding_mode = CIRCULAR
    return clone


@dataclass
class TiledModel(LoadedModel):
    """A loaded model whose UNet and VAE are this job's circular-padding copies."""

    tiled_unet: Any = None
    tiled_vae: Any = None

    @property
    def unet(self):
        return self.tiled_unet

    @property
    def vae(self):
        return self.tiled_vae


def tiled(model: LoadedModel) -> TiledModel:
    """The job's view of `model` with seamless tiling: `unet` and `vae` are patched copies."""
    if isinstance(model, TiledModel):
        return model
    pipe = model.pipe
    shared = _shared_objects(m for m in (pipe.unet, pipe.vae) if m is not None)
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(LoadedModel) if f.init}  # not caches
    return TiledModel(**fields, tiled_unet=circular_copy(pipe.unet, shared),
                      tiled_vae=circular_copy(pipe.vae, shared))


def padding_modes(module: torch.nn.Module) -> set[str]:
    """The padding modes of a module's convolutions (what tests and checks look at)."""
    return {layer.padding_mode for layer in module.modules() if isinstance(layer, torch.nn.Conv2d)}


__all__ = ["TiledModel", "tiled", "circular_copy", "padding_modes"]
