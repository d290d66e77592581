"""Random eviction: the floor every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs, ScorerPress
from .scoring import random_scores


@dataclass
class RandomPress(ScorerPress):
    """Keeps a uniformly random subset of the evictable entries (reproducible with `seed`)."""

    seed: int = 0

    def score(self, layer: LayerInputs) -> torch.Tensor:
        generator = torch.Generator(device=layer.keys.device).manual_seed(self.seed + layer.layer_idx)
        return random_scores(layer.keys.shape[:3], generator=generator, device=layer.keys.device)
