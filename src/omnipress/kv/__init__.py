"""KV-cache presses: prefill- and decoding-time eviction with real (ragged) memory savings."""

from .adakv import AdaKV
from .audiokv import AudioKV
from .base import BudgetConfig, DecodingConfig, KVPress, LayerInputs, ScorerPress
from .h2o import H2O
from .knorm import KNorm
from .mixkv import MixKV
from .pyramidkv import PyramidKV
from .random_press import RandomPress
from .report import CompressionReport, LayerStats
from .snapkv import SnapKV
from .sparsemm import SparseMM
from .streaming_llm import StreamingLLM

__all__ = [
    "H2O",
    "AdaKV",
    "AudioKV",
    "BudgetConfig",
    "CompressionReport",
    "DecodingConfig",
    "KNorm",
    "KVPress",
    "LayerInputs",
    "LayerStats",
    "MixKV",
    "PyramidKV",
    "RandomPress",
    "ScorerPress",
    "SnapKV",
    "SparseMM",
    "StreamingLLM",
]
