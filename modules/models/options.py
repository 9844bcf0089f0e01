"""How models are loaded: device, precision, memory mode, VAE tiling, hashing, cache size.

Torch-free to import (the web UI builds these from settings); `resolve_*` import torch lazily.
Defaults follow A1111: fp16 on CUDA, fp32 on CPU; `--no-half` keeps everything fp32,
`--no-half-vae` only the VAE; `--medvram` = diffusers' model CPU offload, `--lowvram` = sequential
CPU offload.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from .speed import ATTENTIONS


class MemoryMode(str, Enum):
    NONE = "none"
    MEDVRAM = "medvram"  # pipe.enable_model_cpu_offload(): whole components move to the GPU in turn
    LOWVRAM = "lowvram"  # pipe.enable_sequential_cpu_offload(): submodules move in turn (slow, tiny VRAM)


PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelOptions:
    device: Optional[str] = None  # None: "cuda" if available, else "cpu"
    precision: str = "auto"  # auto: fp16 on CUDA (bf16 stays opt-in), fp32 on CPU
    no_half: bool = False  # everything in fp32
    no_half_vae: bool = False  # the VAE in fp32
    memory_mode: MemoryMode = MemoryMode.NONE
    attention: str = "sdpa"  # see modules/models/speed.py: sdpa | sdpa-no-mem | classic
    channels_last: bool = False  # the UNet in channels_last memory layout (--opt-channelslast)
    vae_tile_threshold: int = 1536  # decode tiled when width or height (pixels) exceeds this; 0 = never
    no_hashing: bool = False
    checkpoints_limit: int = 1  # checkpoints kept loaded (LRU)
    vae: str = "Automatic"  # the VAE setting used when a request names none
    default_checkpoint: Optional[str] = None  # the startup model; None = first usable file

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if self.checkpoints_limit < 1:
            raise ValueError(f"checkpoints_limit must be at least 1, got {self.checkpoints_limit}")
        if self.vae_tile_threshold < 0:
            raise ValueError(f"vae_tile_threshold must be 0 (off) or a size in pixels, got {self.vae_tile_threshold}")
        object.__setattr__(self, "memory_mode", MemoryMode(self.memory_mode))

    @classmethod
    def from_flags(cls, *, medvram: bool = False, lowvram: bool = False, **kwargs) -> "ModelOptions":
        mode = MemoryMode.LOWVRAM if lowvram else MemoryMode.MEDVRAM if medvram else MemoryMode.NONE
        return cls(memory_mode=mode, **kwargs)


def resolve_device(options: ModelOptions):
    import torch

    if options.device:
        return torch.device(options.device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _bf16_supported(device) -> bool:
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def resolve_dtypes(options: ModelOptions, device=None):
    """(dtype of UNet and text encoders, dtype of the VAE) for these options on this device."""
    import torch

    device = device if device is not None else resolve_device(options)
    if options.no_half:
        return torch.float32, torch.float32
    if options.precision == "fp32":
        dtype = torch.float32
    elif options.precision == "fp16":
        dtype = torch.float16
    elif options.precision == "bf16":
        dtype = torch.bfloat16 if _bf16_supported(device) else (torch.float16 if device.type == "cuda" else torch.float32)
    else:  # auto
        dtype = torch.float16 if device.type in ("cuda", "mps", "xpu") else torch.float32
    vae_dtype = torch.float32 if options.no_half_vae else dtype
    return dtype, vae_dtype
