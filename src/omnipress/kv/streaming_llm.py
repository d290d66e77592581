"""StreamingLLM: attention sinks plus the most recent entries."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs, ScorerPress
from .scoring import streaming_llm_scores


@dataclass
class StreamingLLM(ScorerPress):
    """StreamingLLM (Xiao et al., 2023, https://arxiv.org/abs/2309.17453).

    Keeps the first `sinks` entries and, within the budget, the most recent ones. Content-agnostic. In a padded
    batch the sinks are each row's first real tokens.
    """

    sinks: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.sinks, bool) or not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"sinks must be a non-negative int, got {self.sinks!r}")

    def score(self, layer: LayerInputs) -> torch.Tensor:
        bsz, heads, n = layer.keys.shape[:3]
        index = layer.real_index().float()  # (batch, 1 or kv_heads, N): order among the real entries
        count = layer.key_mask.sum(-1, keepdim=True).float()
        # streaming_llm_scores on each row's real entries: recency, sinks above everything else
        scores = torch.where(index < self.sinks, index + count, index)
        reference = streaming_llm_scores(n, self.sinks, device=layer.keys.device)
        if layer.padding_mask is None:
            scores = reference.expand(bsz, 1, n)
        return scores.expand(bsz, heads, n)
