"""Loading a restorer file with spandrel and running it on one aligned 512x512 crop.

The file is read without executing code (safetensors, or torch.load with weights_only=True);
spandrel recognises the architecture from the state dict's keys. Each architecture is called as
its authors' inference code calls it, on an RGB tensor in [-1, 1].
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from modules.postprocess.face_restoration.catalog import RestorerSpec
from modules.postprocess.face_restoration.errors import FaceRestorerLoadError


# Each architecture's forward, returning the restored face in [-1, 1]. GFPGAN: the StyleGAN noise
# comes from the file's fixed noise buffers instead of the global RNG, so a restore is
# reproducible (A1111 draws fresh noise on every call). CodeFormer: `weight` is its fidelity w.
FORWARDS: dict[str, Callable[[torch.nn.Module, torch.Tensor, float], torch.Tensor]] = {
    "GFPGAN": lambda net, x, w: net(x, return_rgb=False, randomize_noise=False)[0],
    "CodeFormer": lambda net, x, w: net(x, weight=w)[0],
    "RestoreFormer": lambda net, x, w: net(x)[0],
}


@dataclass
class LoadedRestorer:
    spec: RestorerSpec
    path: Path
    net: torch.nn.Module
    device: torch.device
    dtype: torch.dtype

    def __call__(self, crop: np.ndarray, codeformer_weight: float) -> np.ndarray:
        """An aligned uint8 RGB crop in, the restored crop out as float32 in 0..255."""
        x = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).to(self.device, torch.float32)
        x = (x / 127.5 - 1.0).to(self.dtype)
        with torch.inference_mode():
            y = FORWARDS[self.spec.architecture](self.net, x, codeformer_weight)
        y = torch.nan_to_num(y.float(), nan=0.0).clamp_(-1.0, 1.0)
        return ((y[0].permute(1, 2, 0) + 1.0) * 127.5).cpu().numpy().astype(np.float32)


def install_extra_architectures() -> None:
    """CodeFormer lives in spandrel_extra_arches (MIT licence code, weights under S-Lab's)."""
    from spandrel import MAIN_REGISTRY

    if "CodeFormer" not in MAIN_REGISTRY:
        import spandrel_extra_arches

        spandrel_extra_arches.install(ignore_duplicates=True)


def read_state_dict(name: str, path: Path) -> dict[str, Any]:
    """The file's tensors, read without running any code from it."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FaceRestorerLoadError(name, path, f"refused to unpickle anything but tensors ({exc})") from exc
    except Exception as exc:  # torch and safetensors raise many kinds for a damaged file
        raise FaceRestorerLoadError(name, path, f"unreadable or truncated ({type(exc).__name__}: {exc})") from exc
    if not isinstance(loaded, dict):
        raise FaceRestorerLoadError(name, path, f"holds a {type(loaded).__name__}, not a state dict")
    return loaded


def load_restorer(spec: RestorerSpec, path: Path, device: torch.device, half: bool) -> LoadedRestorer:
    """Load `path` as `spec`'s architecture onto `device`; fp16 when `half`, the device is CUDA
    and spandrel marks the architecture fp16-safe (none of the three is, in spandrel 0.4)."""
    from spandrel import ModelLoader, UnsupportedModelError, canonicalize_state_dict

    install_extra_architectures()
    state_dict = canonicalize_state_dict(read_state_dict(spec.name, path))
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state_dict)
    except UnsupportedModelError as exc:
        raise FaceRestorerLoadError(spec.name, path, f"spandrel recognises no architecture in it ({exc})") from exc
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise FaceRestorerLoadError(spec.name, path, f"not a complete {spec.architecture} model "
                                    f"({type(exc).__name__}: {exc})") from exc
    found = descriptor.architecture.id
    if found != spec.architecture:
        raise FaceRestorerLoadError(spec.name, path, f"holds a {found} model, not {spec.architecture}")
    dtype = torch.float16 if half and device.type == "cuda" and descriptor.supports_half else torch.float32
    net = descriptor.model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    return LoadedRestorer(spec=spec, path=path, net=net, device=device, dtype=dtype)
