"""Whether a state dict fits a module built with empty weights, and loading it when it does: one
rule for checkpoints (single_file.py) and extension models (ControlNet, T2I-Adapter)."""

from __future__ import annotations

from typing import Mapping, Optional

import torch


def _listed(names: list[str]) -> str:
    more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
    return f"{', '.join(names[:3])}{more}"


def misfit(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str,
           extra_allowed: bool = True) -> Optional[str]:
    """Why `state` cannot fill `model` (missing weights, weights it does not have, a wrong shape);
    None when it can."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        return f"{what} weights are missing from the file: {_listed(missing)}"
    unexpected = [] if extra_allowed else [k for k in state if k not in expected]
    if unexpected:
        return f"the file holds weights a {what} does not have: {_listed(unexpected)}"
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape):
            return f"{what} weight {k} has shape {tuple(state[k].shape)}, expected {tuple(t.shape)}"
    return None


def assign(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Put the weights (checked with `misfit`) into the empty model, without copies; eval mode."""
    model.load_state_dict({k: state[k] for k in model.state_dict()}, strict=True, assign=True)
    return model.eval()
