"""AdaKV: head-adaptive budgets inside each layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs
from .budgets import adakv_capacities
from .snapkv import SnapKV


@dataclass
class AdaKV(SnapKV):
    """AdaKV (Feng et al., 2024, https://arxiv.org/abs/2407.11550) on SnapKV scores.

    Each layer's total capacity (`kv_heads * (budget - window)`) is split between heads by a global top-k over all
    heads' window-attention scores, with a guaranteed floor of `floor_ratio` of the uniform share per head.
    `normalize` rescales each head's scores by the mass of its top entries first (as in the MixKV/AdaKV code).
    Unlike kvpress's masked AdaKV, the evicted entries are really freed (ragged per-head cache).

    `exact_total` (default True) rounds the split so that every layer of every row keeps exactly
    `kv_heads * budget` entries (largest-remainder rounding, `budgets.adakv_capacities`); `False` reproduces the
    official AdaKV/MixKV rounding (`round` per head), which can miss the total by a few entries. A head never keeps
    more than its evictable tokens; what it cannot use goes to the other heads, so the total is below nominal only
    when a row has fewer evictable tokens than its heads' budgets (the report's kept counts show it).
    """

    floor_ratio: float = 0.2
    normalize: bool = True
    exact_total: bool = True

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        bsz, heads = scores.shape[:2]
        candidates = layer.candidates.expand(bsz, heads, -1)
        rows = [
            adakv_capacities(
                scores[row : row + 1],
                int(base),
                floor_ratio=self.floor_ratio,
                normalize=self.normalize,
                candidates=candidates[row : row + 1],
                exact_total=self.exact_total,
            )
            for row, base in enumerate(layer.capacity.tolist())
        ]  # each row shares its own total between its heads
        return torch.cat(rows)
