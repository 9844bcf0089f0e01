"""Shared by the annotator nets: numpy <-> torch and reading a weights file safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file, or a torch pickle read with weights_only (no code runs on load)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def load_into(net: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load a file into `net` strictly; a file with other keys or shapes is a clear error."""
    try:
        state = read_state_dict(path)
    except Exception as error:  # a truncated download, an HTML page saved as .pth, a pickle with code
        raise ValueError(f"cannot read weights file {path}: {error}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match {type(net).__name__}'s layout: {error}") from None
    return net.float().eval()


def image_tensor(image: np.ndarray, device, scale: float) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 on `device`, multiplied by `scale`."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=torch.float32)
    return tensor.permute(2, 0, 1).unsqueeze(0) * scale
