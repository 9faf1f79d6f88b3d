"""Layer tests run single-threaded: their tensors are tiny, and on a busy 2-core machine
OpenMP's thread hand-offs cost more than the arithmetic (measured 30x slower with 2 threads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
