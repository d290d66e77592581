"""Audio token pruning inside the language model at layer K (FastV-style), and its baselines.

`with op.FastV(retain=0.5, layer=2)(model): model.generate(**inputs)`: layers below K see the whole prompt, layers
from K on only the kept audio tokens (hidden states, positions, masks and cache shrink). Hosts: Qwen2-Audio, the
Qwen2.5-Omni thinker and Whisper (encoder states pruned before the decoder's cross-attention). HeadRouter
(`omnipress.tokens.headrouter`) runs on the same mechanism.
"""

from .base import AudioPruningReport, InLLMPruner, Probe
from .baselines import DART, FastV, FrameAudioPruner, RandomAudioPruner, fastv_scores

__all__ = [
    "DART",
    "AudioPruningReport",
    "FastV",
    "FrameAudioPruner",
    "InLLMPruner",
    "Probe",
    "RandomAudioPruner",
    "fastv_scores",
]
