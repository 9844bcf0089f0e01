"""Speed options applied when a model loads: the attention kernel and the UNet's memory layout.

Attention is chosen explicitly (never left to whatever diffusers defaults to in its next
release), with A1111's flag names:

    sdpa         --opt-sdp-attention (default): PyTorch's scaled_dot_product_attention (diffusers'
                 AttnProcessor2_0); torch picks the flash, memory-efficient or math kernel.
    sdpa-no-mem  --opt-sdp-no-mem-attention: the same with the memory-efficient kernel off
                 (A1111: repeatable images across runs on CUDA, a little more memory).
    classic      --disable-opt-split-attention: diffusers' AttnProcessor (matmul + softmax; the
                 reference kernel, most memory, slowest).

It applies to the UNet's and the VAE's attention (the text encoders are transformers models and
keep transformers' own SDPA). `--opt-channelslast` puts the UNet in channels_last memory layout
(off by default: see README "Benchmark" for the measurement behind that).

Torch-free to import; applying imports torch and diffusers.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger(__name__)

SDPA, SDPA_NO_MEM, CLASSIC = "sdpa", "sdpa-no-mem", "classic"
ATTENTIONS = (SDPA, SDPA_NO_MEM, CLASSIC)
ATTENTION_FLAGS = {SDPA: "--opt-sdp-attention", SDPA_NO_MEM: "--opt-sdp-no-mem-attention",
                   CLASSIC: "--disable-opt-split-attention"}


def attention_from_flags(args: argparse.Namespace) -> str:
    """The attention the flags ask for; SDPA unless one says otherwise (the most specific wins, as
    in A1111, where --disable-opt-split-attention overrides the others)."""
    if getattr(args, "disable_opt_split_attention", False):
        return CLASSIC
    if getattr(args, "opt_sdp_no_mem_attention", False):
        return SDPA_NO_MEM
    if getattr(args, "xformers", False):
        log.warning("--xformers: xformers is not used here; PyTorch SDPA (the same kernels on PyTorch 2) is")
    return SDPA


def attention_processor(choice: str) -> Any:
    """A diffusers attention processor for `choice` (one instance serves every layer: they are stateless)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if choice == SDPA:
        return AttnProcessor2_0()
    if choice == SDPA_NO_MEM:
        return _sdpa_no_mem_processor()
    if choice == CLASSIC:
        return AttnProcessor()
    raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {choice!r}")


def _sdpa_no_mem_processor() -> Any:
    from diffusers.models.attention_processor import AttnProcessor2_0
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        backends.insert(1, SDPBackend.CUDNN_ATTENTION)

    class SdpaNoMemEfficient(AttnProcessor2_0):
        """AttnProcessor2_0 with torch's memory-efficient SDPA kernel excluded."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     *args, **kwargs):
            with sdpa_kernel(backends):
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                        *args, **kwargs)

    return SdpaNoMemEfficient()


def set_attention(module: Any, choice: str) -> None:
    """Give every attention layer of a diffusers model (UNet, VAE, ControlNet) `choice`'s processor."""
    if module is not None and hasattr(module, "set_attn_processor"):
        module.set_attn_processor(attention_processor(choice))


def set_channels_last(unet: Any, on: bool) -> None:
    import torch

    fmt = torch.channels_last if on else torch.contiguous_format
    torch.nn.Module.to(unet, memory_format=fmt)  # plain Module.to: diffusers' override warns on every call


def apply_speed_options(pipe: Any, options: Any) -> None:
    """Attention processors on the UNet and VAE, and the UNet's memory layout, from ModelOptions."""
    for name in ("unet", "vae"):
        set_attention(getattr(pipe, name, None), options.attention)
    if options.channels_last:
        set_channels_last(pipe.unet, True)


def current_attention(module: Any) -> str:
    """The choice the attention layers of `module` run ("mixed" if they differ, "none" if it has none)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    names = set()
    for proc in getattr(module, "attn_processors", {}).values():
        if type(proc).__name__ == "SdpaNoMemEfficient":
            names.add(SDPA_NO_MEM)
        elif type(proc) is AttnProcessor2_0:
            names.add(SDPA)
        elif type(proc) is AttnProcessor:
            names.add(CLASSIC)
        else:
            names.add(type(proc).__name__)
    return names.pop() if len(names) == 1 else ("none" if not names else "mixed")


def describe(options: Any) -> str:
    """One start-up log line: device, precision and the speed options in effect."""
    from .options import resolve_device, resolve_dtypes

    device = resolve_device(options)
    dtype, vae_dtype = resolve_dtypes(options, device)
    short = lambda d: str(d).replace("torch.", "")  # noqa: E731
    return (f"device {device.type}, UNet/text encoders {short(dtype)}, VAE {short(vae_dtype)}, "
            f"attention {options.attention} ({ATTENTION_FLAGS[options.attention]}), "
            f"channels_last {'on' if options.channels_last else 'off'}, memory mode {options.memory_mode.value}")
