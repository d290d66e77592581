"""omnipress: training-free compression for multimodal LLMs on Hugging Face transformers.

    import omnipress as op
    press = op.MixKV(op.AdaKV(budget=128))
    with press(model):
        out = model.generate(**inputs, max_new_tokens=32)
    print(press.report)

Methods compose: `with cacher(model), pruner(model), press(model):` or `with op.compose(cacher, pruner, press)(model):`.

Names are imported on first use, so `import omnipress.eeg` (the RAICL application) does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "H2O": "omnipress.kv",
    "AdaKV": "omnipress.kv",
    "CompressionReport": "omnipress.kv",
    "KNorm": "omnipress.kv",
    "KVPress": "omnipress.kv",
    "MixKV": "omnipress.kv",
    "PyramidKV": "omnipress.kv",
    "RandomPress": "omnipress.kv",
    "SnapKV": "omnipress.kv",
    "SparseMM": "omnipress.kv",
    "StreamingLLM": "omnipress.kv",
    "Method": "omnipress.core",
    "ModelSession": "omnipress.core",
    "compose": "omnipress.core",
    "RaggedLayer": "omnipress.cache",
    "capture_prefill": "omnipress.kv.session",
    "compress_captured": "omnipress.kv.session",
    "HeadProfile": "omnipress.profiles",
    "ModalitySpans": "omnipress.spans",
    "Span": "omnipress.spans",
    "get_adapter": "omnipress.adapters",
    "generate": "omnipress.generation",
    "read_video": "omnipress.media",
    "TruncatedMediaWarning": "omnipress.media",
    "read_audio": "omnipress.media",
}

__all__ = [
    "H2O",
    "AdaKV",
    "CompressionReport",
    "HeadProfile",
    "KNorm",
    "KVPress",
    "Method",
    "MixKV",
    "ModalitySpans",
    "ModelSession",
    "PyramidKV",
    "RaggedLayer",
    "RandomPress",
    "SnapKV",
    "Span",
    "SparseMM",
    "StreamingLLM",
    "TruncatedMediaWarning",
    "capture_prefill",
    "compose",
    "compress_captured",
    "generate",
    "get_adapter",
    "read_audio",
    "read_video",
]

if TYPE_CHECKING:
    from .adapters import get_adapter
    from .cache import RaggedLayer
    from .core import Method, ModelSession, compose
    from .generation import generate
    from .kv import (
        H2O,
        AdaKV,
        CompressionReport,
        KNorm,
        KVPress,
        MixKV,
        PyramidKV,
        RandomPress,
        SnapKV,
        SparseMM,
        StreamingLLM,
    )
    from .kv.session import capture_prefill, compress_captured
    from .media import TruncatedMediaWarning, read_audio, read_video
    from .profiles import HeadProfile
    from .spans import ModalitySpans, Span


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'omnipress' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
