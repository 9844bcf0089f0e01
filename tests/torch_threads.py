"""Tiny models on a shared 2-core CPU: several threads per op only fight each other (up to 30x
slower), so the suites of tiny models run torch on one thread and give the count back after."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
