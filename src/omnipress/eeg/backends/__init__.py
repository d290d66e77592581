"""VLM backends behind one interface (:class:`Backend`: a prompt in, an :class:`Answer` out).

- :class:`~omnipress.eeg.backends.http.OpenAIChatBackend`: any OpenAI-compatible chat endpoint (vLLM, SGLang,
  Ollama, hosted APIs), with concurrency, retries and timeouts.
- :class:`~omnipress.eeg.backends.local.LocalVLMBackend`: a local transformers VLM with omnipress KV compression
  and prompt-prefix reuse.

The two implementations are imported on first use (httpx / torch are only needed by the one you pick).
"""

from __future__ import annotations

import importlib
from typing import Any

from omnipress.eeg.backends.base import Answer, Backend, BackendFatalError

_LAZY = {
    "OpenAIChatBackend": "http",
    "LocalVLMBackend": "local",
    "make_press": "local",
}

__all__ = ["Answer", "Backend", "BackendFatalError", "LocalVLMBackend", "OpenAIChatBackend", "make_press"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
