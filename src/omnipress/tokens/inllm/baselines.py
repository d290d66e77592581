"""The audio token pruning baselines of AudioMarathon (github DabDans/AudioMarathon), on the in-LLM mechanism.

| pruner | keeps at layer K |
|---|---|
| `FastV` | the audio tokens the last token attends to most at layer K-1, mean over heads (arXiv 2403.06764) |
| `DART` | pivots (largest hidden-state norm) and the tokens least similar to them (arXiv 2502.11494) |
| `FrameAudioPruner` | evenly spaced audio tokens (AudioMarathon's "Frame") |
| `RandomAudioPruner` | a seeded random subset |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import InLLMPruner, Probe
from .scoring import dart_scores, frame_keep


@dataclass
class FastV(InLLMPruner):
    """FastV for audio (arXiv 2403.06764; AudioMarathon's Qwen2.5-Omni port): rank the audio tokens by the attention
    they receive at layer K-1, averaged over heads, and keep the top `retain` share from layer K on.

    Parameters
    ----------
    query : str
        `"last"`: the last prompt token's attention (AudioMarathon); `"text"`: averaged over every text token after
        the audio (the FastV paper averages over all queries).
    """

    retain: float = 0.5
    layer: int = 2
    query: str = "last"

    uses_attention: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.query not in ("last", "text"):
            raise ValueError(f"query must be 'last' or 'text', got {self.query!r}")

    def score(self, probe: Probe) -> torch.Tensor:
        return fastv_scores(probe.attention)


def fastv_scores(attention: torch.Tensor) -> torch.Tensor:
    """`(B, N)`: FastV's importance, the mean over heads of the probe attention `(B, H, N)`."""
    return attention.mean(dim=1)


@dataclass
class DART(InLLMPruner):
    """DART, duplication-aware token reduction (arXiv 2502.11494), on audio as AudioMarathon applies it at layer 2:
    `pivots` audio tokens of largest hidden-state L2 norm, then the tokens least similar (cosine) to any pivot.

    Parameters
    ----------
    pivots : int
        Pivot tokens per row (always kept).
    """

    retain: float = 0.5
    layer: int = 2
    pivots: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.pivots, bool) or not isinstance(self.pivots, int) or self.pivots < 1:
            raise ValueError(f"pivots must be a positive integer, got {self.pivots!r}")

    def score(self, probe: Probe) -> torch.Tensor:
        return dart_scores(probe.features, probe.candidates, self.pivots)


@dataclass
class FrameAudioPruner(InLLMPruner):
    """Uniform temporal subsampling of the audio tokens (AudioMarathon's "Frame"): of `n`, keep ranks
    `floor(i * n / k)`, `k = ceil(retain * n)`."""

    retain: float = 0.5
    layer: int = 2

    def select(self, probe: Probe) -> torch.Tensor:
        return frame_keep(probe.candidates, self.retain)


@dataclass
class RandomAudioPruner(InLLMPruner):
    """A seeded random `retain` share of the audio tokens. Identical rows (beams) keep identical tokens; the same
    seed keeps the same tokens on every call."""

    retain: float = 0.5
    layer: int = 2
    seed: int = 0

    def score(self, probe: Probe) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(self.seed))
        seq = probe.candidates.shape[1]
        noise = torch.rand(seq, generator=generator).to(probe.candidates.device)
        return noise.expand_as(probe.candidates)
