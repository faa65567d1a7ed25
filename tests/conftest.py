"""Shared pytest fixtures for the course_utils tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: OpenMP thread hand-offs cost far more than the maths (100x on a busy 2-core machine).

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``; the thread count is restored
    after the module.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
