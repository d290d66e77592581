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
    "AudioKV": "omnipress.kv",
    "CompressionReport": "omnipress.kv",
    "KNorm": "omnipress.kv",
    "KVPress": "omnipress.kv",
    "MixKV": "omnipress.kv",
    "PyramidKV": "omnipress.kv",
    "RandomPress": "omnipress.kv",
    "SnapKV": "omnipress.kv",
    "SparseMM": "omnipress.kv",
    "StreamingLLM": "omnipress.kv",
    "STCCacher": "omnipress.encoders",
    "CacherStats": "omnipress.encoders",
    "ToMe": "omnipress.encoders",
    "ToMeStats": "omnipress.encoders",
    "STCPruner": "omnipress.tokens",
    "VisionZipPruner": "omnipress.tokens",
    "VidCom2Pruner": "omnipress.tokens",
    "DivPrunePruner": "omnipress.tokens",
    "UniformPruner": "omnipress.tokens",
    "RandomPruner": "omnipress.tokens",
    "TokenPruner": "omnipress.tokens",
    "PruningReport": "omnipress.tokens",
    "Method": "omnipress.core",
    "ModelSession": "omnipress.core",
    "compose": "omnipress.core",
    "RaggedLayer": "omnipress.cache",
    "capture_prefill": "omnipress.kv.session",
    "compress_captured": "omnipress.kv.session",
    "HeadProfile": "omnipress.profiles",
    "ModelFingerprint": "omnipress.profiles",
    "ProfileError": "omnipress.profiles",
    "audio_head_profile": "omnipress.profiles",
    "ModalitySpans": "omnipress.spans",
    "Span": "omnipress.spans",
    "get_adapter": "omnipress.adapters",
    "generate": "omnipress.generation",
    "transcribe": "omnipress.asr",
    "word_error_rate": "omnipress.asr",
    "whisper_tiny_en": "omnipress.weights_whisper",
    "read_video": "omnipress.media",
    "StreamingSession": "omnipress.streaming",
    "FullMemory": "omnipress.streaming",
    "WindowMemory": "omnipress.streaming",
    "RetrievalMemory": "omnipress.streaming",
    "StreamAnswer": "omnipress.streaming",
    "StreamReport": "omnipress.streaming",
    "PromptReport": "omnipress.streaming",
    "TruncatedMediaWarning": "omnipress.media",
    "StreamInterruptedWarning": "omnipress.media",
    "read_audio": "omnipress.media",
    "HeadRouter": "omnipress.tokens.headrouter",
    "RouterProfiles": "omnipress.profiles.router",
    "FastV": "omnipress.tokens.inllm",
    "DART": "omnipress.tokens.inllm",
    "FrameAudioPruner": "omnipress.tokens.inllm",
    "RandomAudioPruner": "omnipress.tokens.inllm",
    "InLLMPruner": "omnipress.tokens.inllm",
    "AudioPruningReport": "omnipress.tokens.inllm",
}

__all__ = [
    "DART",
    "H2O",
    "AdaKV",
    "AudioKV",
    "AudioPruningReport",
    "CacherStats",
    "CompressionReport",
    "DivPrunePruner",
    "FastV",
    "FrameAudioPruner",
    "FullMemory",
    "HeadProfile",
    "HeadRouter",
    "InLLMPruner",
    "KNorm",
    "KVPress",
    "Method",
    "MixKV",
    "ModalitySpans",
    "ModelFingerprint",
    "ModelSession",
    "ProfileError",
    "PromptReport",
    "PruningReport",
    "PyramidKV",
    "RaggedLayer",
    "RandomAudioPruner",
    "RandomPress",
    "RandomPruner",
    "RetrievalMemory",
    "RouterProfiles",
    "STCCacher",
    "STCPruner",
    "SnapKV",
    "Span",
    "SparseMM",
    "StreamAnswer",
    "StreamInterruptedWarning",
    "StreamReport",
    "StreamingLLM",
    "StreamingSession",
    "ToMe",
    "ToMeStats",
    "TokenPruner",
    "TruncatedMediaWarning",
    "UniformPruner",
    "VidCom2Pruner",
    "VisionZipPruner",
    "WindowMemory",
    "audio_head_profile",
    "capture_prefill",
    "compose",
    "compress_captured",
    "generate",
    "get_adapter",
    "read_audio",
    "read_video",
    "transcribe",
    "whisper_tiny_en",
    "word_error_rate",
]

if TYPE_CHECKING:
    from .adapters import get_adapter
    from .asr import transcribe, word_error_rate
    from .cache import RaggedLayer
    from .core import Method, ModelSession, compose
    from .encoders import CacherStats, STCCacher, ToMe, ToMeStats
    from .generation import generate
    from .kv import (
        H2O,
        AdaKV,
        AudioKV,
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
    from .media import StreamInterruptedWarning, TruncatedMediaWarning, read_audio, read_video
    from .profiles import HeadProfile, ModelFingerprint, ProfileError, audio_head_profile
    from .profiles.router import RouterProfiles
    from .spans import ModalitySpans, Span
    from .streaming import (
        FullMemory,
        PromptReport,
        RetrievalMemory,
        StreamAnswer,
        StreamingSession,
        StreamReport,
        WindowMemory,
    )
    from .tokens import (
        DivPrunePruner,
        PruningReport,
        RandomPruner,
        STCPruner,
        TokenPruner,
        UniformPruner,
        VidCom2Pruner,
        VisionZipPruner,
    )
    from .tokens.headrouter import HeadRouter
    from .tokens.inllm import DART, AudioPruningReport, FastV, FrameAudioPruner, InLLMPruner, RandomAudioPruner
    from .weights_whisper import whisper_tiny_en


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'omnipress' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
