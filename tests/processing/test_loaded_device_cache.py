"""`LoadedModel.device` is cached (diffusers' `_execution_device` walks every module) and stays
right when the pipeline's placement changes: offload hooks added or removed (what --medvram /
--lowvram and the registry's re-hooking do), a component swapped, a model copied with a new pipe."""

from __future__ import annotations

import dataclasses

import torch
from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

from modules.models.loaded import LoadedModel
from tests.tiny_model import tiny_loaded_model

# A device that need not exist: the offload hook's execution device is only read, never used here.
ACCELERATOR = torch.device("cuda", 0)


class OffloadTarget(ModelHook):
    """Stands where accelerate's CpuOffload / AlignDevicesHook stand: carries `execution_device`."""

    def __init__(self, device: torch.device) -> None:
        self.execution_device = device


def components(model: LoadedModel) -> list[torch.nn.Module]:
    return [m for m in (model.pipe.vae, model.pipe.text_encoder, model.pipe.unet)]


def test_device_is_cached_until_the_placement_changes():
    model = tiny_loaded_model(seed=2)
    assert model.device == torch.device("cpu")
    assert model._device_cache is not None
    first_key = model._device_cache[0]
    assert model.device == torch.device("cpu") and model._device_cache[0] is first_key  # served from the cache

    for module in components(model):  # offload: hooks whose execution device is the accelerator
        add_hook_to_module(module, OffloadTarget(ACCELERATOR))
    try:
        assert model.device == ACCELERATOR == model.pipe._execution_device
    finally:
        for module in components(model):
            remove_hook_from_module(module)
    assert model.device == torch.device("cpu") == model.pipe._execution_device


def test_rehooking_with_another_target_is_seen():
    """The registry re-hooks a pipeline under --medvram: new hook objects, looked up again."""
    model = tiny_loaded_model(seed=2)
    for target in (torch.device("cuda", 0), torch.device("cuda", 1)):
        for module in components(model):
            remove_hook_from_module(module)
            add_hook_to_module(module, OffloadTarget(target))
        assert model.device == target == model.pipe._execution_device
    for module in components(model):
        remove_hook_from_module(module)
    assert model.device == torch.device("cpu")


def test_a_swapped_component_or_a_copy_looks_again():
    model = tiny_loaded_model(seed=2)
    assert model.device == torch.device("cpu")
    vae = model.pipe.vae
    add_hook_to_module(vae, OffloadTarget(ACCELERATOR))  # a hooked VAE (--lowvram's VAE override) swapped in
    model.pipe.register_modules(vae=vae)
    try:
        assert model.device == ACCELERATOR == model.pipe._execution_device
    finally:
        remove_hook_from_module(vae)
    copy = dataclasses.replace(model, pipe=tiny_loaded_model(seed=3).pipe)
    assert copy._device_cache is None and copy.device == torch.device("cpu")
    assert copy == dataclasses.replace(copy)  # the cache takes no part in equality


def test_an_object_that_is_not_a_pipeline_is_never_cached():
    class Bare:  # e.g. a stand-in pipeline in a test: a unet with a device, no diffusers config
        unet = tiny_loaded_model(seed=2).pipe.unet

    model = dataclasses.replace(tiny_loaded_model(seed=2), pipe=Bare())
    assert model.device == torch.device("cpu") and model._device_cache is None


def test_real_model_offload_hooks_as_medvram_sets_them():
    """diffusers' own model offload, as --medvram uses it and the registry re-hooks it. Only hooks
    are set up: the accelerator need not exist, nothing runs on it. (--lowvram's accelerate
    `cpu_offload` touches CUDA when hooking, so only the hook stand-in above covers it on a CPU.)"""
    model = tiny_loaded_model(seed=2)
    assert model.device == torch.device("cpu")
    model.pipe.enable_model_cpu_offload(device="cuda:0")
    assert model.device == torch.device("cuda", 0) == model.pipe._execution_device
    model.pipe.enable_model_cpu_offload(device="cuda:1")  # re-hooked (another target, to tell them apart)
    assert model.device == torch.device("cuda", 1) == model.pipe._execution_device
    model.pipe.remove_all_hooks()
    assert model.device == torch.device("cpu") == model.pipe._execution_device
