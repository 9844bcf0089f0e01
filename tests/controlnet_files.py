"""Random-weight ControlNet / T2I-Adapter files in the layouts the real releases use.

* `make_sd15_controlnet(path)`: a `control_v11p_sd15_*`-style single file in the original (lllyasviel)
  layout (`control_model.input_blocks.*`, `zero_convs.*`, `input_hint_block.*`, `middle_block_out.*`),
  `.safetensors` or a torch pickle (`.pth`/`.pt`/`.ckpt`) by suffix, fp32 or fp16 (the pruned
  variants), sized to fit `checkpoint_factory.make_checkpoint(..., "sd1")`'s tiny UNet.
* `make_sd21_controlnet(path)`: the same for the tiny SD 2.x checkpoint (linear projections).
* `make_sdxl_controlnet_folder(folder)`: a diffusers folder (config.json +
  diffusion_pytorch_model.safetensors) for the tiny SDXL checkpoint; `make_sdxl_controlnet_file(path)`
  the same weights as one diffusers-layout safetensors (like `diffusers_xl_canny_full.safetensors`).
* `make_t2i_adapter_folder(folder)`: a diffusers T2IAdapter folder for the tiny SD1 UNet;
  `make_t2i_adapter_file(path)` a TencentARC `t2iadapter_*_sd14v1.pth`-style single file.
* `make_controlnet_for_unet(path, unet_config)`: any of the above shapes for any UNet config (e.g. the
  tests' `tiny_model` UNet or the embedded model's): `layout="original" | "diffusers" | "folder"`.

Every builder returns a `FakeControl` with the diffusers-layout tensors and the config, so a test
can build the expected model directly. Weights are seeded random (the zero convolutions too, so a
control visibly changes the output). Bad files: use `checkpoint_factory.make_malicious_ckpt`,
`make_empty`, `make_corrupt_header`, `make_truncated`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from modules.paths import CONFIGS_DIR, EXTENSIONS_BUILTIN_DIR
from tests.checkpoint_factory import _random_like, component_configs, save_state

CONTROLNET_EXT_DIR = EXTENSIONS_BUILTIN_DIR / "controlnet"
if str(CONTROLNET_EXT_DIR) not in sys.path:  # what the extension loader does for `controlnet_ext.*`
    sys.path.append(str(CONTROLNET_EXT_DIR))

from controlnet_ext.original_controlnet import controlnet_to_original  # noqa: E402

CONTROLNET_CONFIGS = CONFIGS_DIR / "controlnet"
REAL_CONFIG = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl"}
# UNet config keys a ControlNetModel shares (what ControlNetModel.from_unet copies)
_SHARED = ("in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention", "block_out_channels",
           "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
           "cross_attention_dim", "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type",
           "attention_head_dim", "num_attention_heads", "use_linear_projection", "class_embed_type",
           "addition_embed_type", "addition_time_embed_dim", "num_class_embeds", "upcast_attention",
           "resnet_time_scale_shift", "projection_class_embeddings_input_dim", "mid_block_type")


@dataclass
class FakeControl:
    path: Path
    config: dict  # the diffusers config (ControlNetModel or T2IAdapter)
    state: dict[str, torch.Tensor]  # diffusers-layout tensors, as saved (dtype included)
    cls: str = "ControlNetModel"

    def build(self, dtype=torch.float32, **config_overrides):
        """The model built directly from these weights (what loading the file must equal).
        `config_overrides`: what the weights cannot tell, e.g. the attention heads of the UNet it runs with."""
        import diffusers
        from accelerate import init_empty_weights

        with init_empty_weights():
            model = getattr(diffusers, self.cls).from_config({**self.config, **config_overrides})
        model.load_state_dict({k: v.to(dtype) for k, v in self.state.items()}, strict=True, assign=True)
        return model.eval()


def controlnet_config_for_unet(unet_config: Mapping[str, Any], conditioning_channels: int = 3,
                               conditioning_embedding_out_channels=(16, 32, 96, 256)) -> dict:
    """A ControlNetModel config for a UNet config (as ControlNetModel.from_unet builds it)."""
    cfg = {k: unet_config[k] for k in _SHARED if k in unet_config}
    cfg["in_channels"] = 4  # inpainting UNets take 9; their ControlNets still see the 4 latent channels
    cfg.update(conditioning_channels=conditioning_channels,
               conditioning_embedding_out_channels=list(conditioning_embedding_out_channels))
    return cfg


def tiny_unet_config(variant: str) -> dict:
    """The UNet config of `checkpoint_factory.make_checkpoint(path, variant)` (size tiny)."""
    return component_configs(variant, "tiny")["unet"]


def real_controlnet_config(family: str) -> dict:
    """The shipped config of the real release for 'sd1' | 'sd2' | 'sdxl'."""
    cfg = json.loads((CONTROLNET_CONFIGS / REAL_CONFIG[family] / "config.json").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _meta(cls_name: str, config: Mapping[str, Any]):
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        return getattr(diffusers, cls_name).from_config(dict(config))


def random_control_state(config: Mapping[str, Any], seed: int = 0, dtype=torch.float32,
                         cls: str = "ControlNetModel") -> dict[str, torch.Tensor]:
    """Seeded random tensors with the model's diffusers names and shapes (zero convs not zero)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: _random_like(k, tuple(v.shape), gen, dtype) for k, v in _meta(cls, config).state_dict().items()}


def original_controlnet_shapes(config: Mapping[str, Any], prefix: str = "control_model.") -> dict[str, tuple]:
    """Key -> shape of a ControlNet of `config` in the original layout, built on the meta device."""
    state = _meta("ControlNetModel", config).state_dict()
    return {k: tuple(v.shape) for k, v in controlnet_to_original(state, config, prefix).items()}


def _fmt(path: Path, fmt: Optional[str]) -> str:
    return fmt or ("safetensors" if path.suffix.lower() == ".safetensors" else "pickle")


def _save(path: Path, sd: dict, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        save_state(path, sd, "safetensors")
    else:  # the v1.1 .pth files are a plain tensor dict
        torch.save({k: v.contiguous() for k, v in sd.items()}, path)


def make_controlnet_for_unet(path: Path, unet_config: Mapping[str, Any], *, seed: int = 0, fmt: Optional[str] = None,
                             dtype=torch.float32, layout: str = "original", prefix: str = "control_model.",
                             conditioning_channels: int = 3, config: Optional[Mapping[str, Any]] = None) -> FakeControl:
    """A ControlNet that fits a UNet of `unet_config`. layout: "original" (single file, `prefix` on the
    keys: "control_model." or ""), "diffusers" (one diffusers-layout safetensors) or "folder"
    (diffusers folder at `path`)."""
    path = Path(path)
    cfg = dict(config) if config is not None else controlnet_config_for_unet(unet_config, conditioning_channels)
    state = random_control_state(cfg, seed, dtype)
    if layout == "folder":
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "_diffusers_version": "0.27.0", **cfg},
                                                     indent=2))
        save_state(path / "diffusion_pytorch_model.safetensors", state, "safetensors")
    elif layout == "diffusers":
        _save(path, state, _fmt(path, fmt))
    elif layout == "original":
        _save(path, controlnet_to_original(state, cfg, prefix), _fmt(path, fmt))
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return FakeControl(path, cfg, state)


def make_sd15_controlnet(path: Path, seed: int = 0, fmt: Optional[str] = None, *, dtype=torch.float32,
                         prefix: str = "control_model.", size: str = "tiny") -> FakeControl:
    """`control_v11p_sd15_*` layout for the tiny SD1 checkpoint (size="real": the real shapes, ~1.4 GB)."""
    cfg = real_controlnet_config("sd1") if size == "real" else None
    return make_controlnet_for_unet(path, tiny_unet_config("sd1"), seed=seed, fmt=fmt, dtype=dtype, prefix=prefix, config=cfg)


def make_sd21_controlnet(path: Path, seed: int = 0, fmt: Optional[str] = None, *, dtype=torch.float32,
                         prefix: str = "control_model.") -> FakeControl:
    """An SD 2.x ControlNet (thibaud `control_v11p_sd21_*` layout) for the tiny SD2 checkpoint."""
    return make_controlnet_for_unet(path, tiny_unet_config("sd2"), seed=seed, fmt=fmt, dtype=dtype, prefix=prefix)


def make_sdxl_controlnet_folder(folder: Path, seed: int = 0, *, dtype=torch.float32) -> FakeControl:
    """A diffusers ControlNetModel folder for the tiny SDXL checkpoint."""
    return make_controlnet_for_unet(folder, tiny_unet_config("sdxl"), seed=seed, dtype=dtype, layout="folder")


def make_sdxl_controlnet_file(path: Path, seed: int = 0, *, dtype=torch.float32) -> FakeControl:
    """One diffusers-layout safetensors for the tiny SDXL checkpoint (like diffusers_xl_canny_full)."""
    return make_controlnet_for_unet(path, tiny_unet_config("sdxl"), seed=seed, dtype=dtype, layout="diffusers")


def make_t2i_adapter_folder(folder: Path, seed: int = 0, *, unet_config: Optional[Mapping[str, Any]] = None,
                            in_channels: int = 3, dtype=torch.float32) -> FakeControl:
    """A diffusers T2IAdapter folder (full_adapter) whose features fit the UNet (default: tiny SD1)."""
    unet_config = unet_config or tiny_unet_config("sd1")
    cfg = {"in_channels": in_channels, "channels": list(unet_config["block_out_channels"]),
           "num_res_blocks": 2, "downscale_factor": 8, "adapter_type": "full_adapter"}
    state = random_control_state(cfg, seed, dtype, cls="T2IAdapter")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "T2IAdapter", "_diffusers_version": "0.27.0", **cfg}, indent=2))
    save_state(folder / "diffusion_pytorch_model.safetensors", state, "safetensors")
    return FakeControl(folder, cfg, state, cls="T2IAdapter")


def make_t2i_adapter_file(path: Path, seed: int = 0, *, unet_config: Optional[Mapping[str, Any]] = None,
                          in_channels: int = 1, dtype=torch.float32) -> FakeControl:
    """A TencentARC `t2iadapter_*_sd14v1.pth`-style full adapter (flat `body.N`, `conv_in`), by default
    1-channel like the canny/sketch adapters; sized for the UNet (default: tiny SD1)."""
    unet_config = unet_config or tiny_unet_config("sd1")
    cfg = {"in_channels": in_channels, "channels": list(unet_config["block_out_channels"]),
           "num_res_blocks": 2, "downscale_factor": 8, "adapter_type": "full_adapter"}
    state = random_control_state(cfg, seed, dtype, cls="T2IAdapter")
    nrb = cfg["num_res_blocks"]
    original = {}
    for key, value in state.items():
        parts = key.split(".")  # adapter.conv_in.w | adapter.body.L.in_conv.w | adapter.body.L.resnets.J.blockN.w
        if parts[1] == "conv_in":
            original["conv_in." + parts[2]] = value
        elif parts[3] == "in_conv":
            original[f"body.{int(parts[2]) * nrb}.in_conv.{parts[4]}"] = value
        else:
            original[f"body.{int(parts[2]) * nrb + int(parts[4])}.{parts[5]}.{parts[6]}"] = value
    _save(Path(path), original, _fmt(Path(path), None))
    return FakeControl(Path(path), cfg, state, cls="T2IAdapter")


__all__ = ["make_t2i_adapter_file", "FakeControl", "make_sd15_controlnet", "make_sd21_controlnet", "make_sdxl_controlnet_folder",
           "make_sdxl_controlnet_file", "make_t2i_adapter_folder", "make_controlnet_for_unet",
           "controlnet_config_for_unet", "tiny_unet_config", "real_controlnet_config", "original_controlnet_shapes",
           "random_control_state", "CONTROLNET_EXT_DIR"]
