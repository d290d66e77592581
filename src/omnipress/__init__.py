"""omnipress: training-free compression for multimodal LLMs on Hugging Face transformers.

    import omnipress as op
    press = op.MixKV(op.AdaKV(budget=128))
    with press(model):
        out = model.generate(**inputs, max_new_tokens=32)
    print(press.report)
"""

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
from .profiles import HeadProfile
from .spans import ModalitySpans, Span

__version__ = "0.1.0"

__all__ = [
    "H2O",
    "AdaKV",
    "CompressionReport",
    "HeadProfile",
    "KNorm",
    "KVPress",
    "MixKV",
    "ModalitySpans",
    "PyramidKV",
    "RandomPress",
    "SnapKV",
    "Span",
    "SparseMM",
    "StreamingLLM",
]
