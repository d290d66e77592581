"""PyramidKV: SnapKV selection with more budget in lower layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs
from .budgets import pyramid_capacities
from .snapkv import SnapKV


@dataclass
class PyramidKV(SnapKV):
    """PyramidKV (Cai et al., 2024, https://arxiv.org/abs/2406.02069).

    SnapKV scoring with a linearly decaying per-layer capacity whose mean is the SnapKV capacity: lower layers keep
    more. `beta` (default 20) sets the smallest layer's share (`base // beta`).
    """

    beta: int = 20

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        n_valid = int(layer.candidates.sum())
        per_layer = pyramid_capacities(layer.capacity, layer.num_layers, n_valid, beta=self.beta)
        bsz, heads = scores.shape[:2]
        return torch.full((bsz, heads), per_layer[layer.layer_idx], dtype=torch.long, device=scores.device)
