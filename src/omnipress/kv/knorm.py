"""KNorm: keep the entries with the smallest key norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs, ScorerPress
from .scoring import knorm_scores


@dataclass
class KNorm(ScorerPress):
    """KNorm (Devoto et al., 2024, https://arxiv.org/abs/2406.11430): low key L2 norm predicts high attention."""

    def score(self, layer: LayerInputs) -> torch.Tensor:
        return knorm_scores(layer.keys)
