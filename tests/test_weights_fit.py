"""The one rule for filling a module built with empty weights from a file's state dict."""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights

from modules.models.weights_fit import assign, misfit


def empty_linear() -> torch.nn.Linear:
    with init_empty_weights():
        return torch.nn.Linear(3, 2)


def test_a_fitting_state_is_assigned_without_copies():
    state = {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.tensor([1.0, -1.0])}
    model = empty_linear()
    assert misfit(model, state, "Linear") is None
    loaded = assign(model, state)
    assert loaded.weight.data_ptr() == state["weight"].data_ptr() and not loaded.training
    assert torch.equal(loaded(torch.ones(1, 3)), torch.tensor([[4.0, 11.0]]))


@pytest.mark.parametrize("state, extra_allowed, message", [
    ({"weight": torch.zeros(2, 3)}, True, "Linear weights are missing from the file: bias"),
    ({"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "scale": torch.zeros(1)}, False,
     "the file holds weights a Linear does not have: scale"),
    ({"weight": torch.zeros(3, 3), "bias": torch.zeros(2)}, True,
     "Linear weight weight has shape (3, 3), expected (2, 3)"),
])
def test_what_does_not_fit_is_named(state, extra_allowed, message):
    assert misfit(empty_linear(), state, "Linear", extra_allowed=extra_allowed) == message


def test_extra_weights_are_allowed_where_files_hold_more_than_the_module():
    state = {"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "scale": torch.zeros(1)}
    assert misfit(empty_linear(), state, "Linear") is None
