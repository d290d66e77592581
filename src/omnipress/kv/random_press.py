"""Random eviction: the floor every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs, ScorerPress
from .scoring import hashed_uniform


@dataclass
class RandomPress(ScorerPress):
    """Keeps a uniformly random subset of the evictable entries (reproducible with `seed`).

    The draw for an entry depends on the seed, the layer, the KV head and the entry's index among its row's real
    tokens (`hashed_uniform`), so a padded row of a batch draws exactly as the same prompt alone, and the beams of
    one prompt share one selection.
    """

    seed: int = 0

    def score(self, layer: LayerInputs) -> torch.Tensor:
        bsz, heads, n = layer.keys.shape[:3]
        index = layer.real_index().clamp_min(0).expand(bsz, heads, n)  # (batch, kv_heads, N)
        head = torch.arange(heads, device=index.device).view(1, heads, 1)
        key = (self.seed * 1_000_003 + layer.layer_idx) * 1009
        return hashed_uniform(index * 1024 + head, key)
