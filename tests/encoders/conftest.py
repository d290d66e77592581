"""One torch thread for the encoder tests: the shared CI/dev CPUs make multi-threaded element-wise kernels of these
tiny towers far slower than one thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
