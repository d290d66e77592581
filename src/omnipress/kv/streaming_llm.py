"""StreamingLLM: attention sinks plus the most recent entries."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs, ScorerPress
from .scoring import streaming_llm_scores


@dataclass
class StreamingLLM(ScorerPress):
    """StreamingLLM (Xiao et al., 2023, https://arxiv.org/abs/2309.17453).

    Keeps the first `sinks` entries and, within the budget, the most recent ones. Content-agnostic.
    """

    sinks: int = 4

    def score(self, layer: LayerInputs) -> torch.Tensor:
        scores = streaming_llm_scores(layer.seq_len, self.sinks, device=layer.keys.device)
        return scores.expand(layer.keys.shape[0], layer.keys.shape[1], -1)
