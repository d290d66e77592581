"""`no_host_sync()`: fail a test when code reads a tensor value on the host (the CPU stand-in of CUDA's sync check).

On a GPU, `tensor.item()`, `.tolist()`, `int(t)`, `float(t)`, `bool(t)` and using a tensor as a Python index wait for
the device. On the CPU they cost nothing, so a decode path could sync on every step unnoticed; inside this context
they raise instead. (On CUDA, `torch.cuda.set_sync_debug_mode("error")` is the real check; see the GPU tests.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_GUARDED = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")


class HostSyncError(AssertionError):
    pass


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    saved = {name: getattr(torch.Tensor, name) for name in _GUARDED}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostSyncError(f"Tensor.{name}() read a tensor value on the host")

        return method

    try:
        for name in _GUARDED:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
