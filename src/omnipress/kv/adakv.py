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
    """

    floor_ratio: float = 0.2
    normalize: bool = True

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        return adakv_capacities(
            scores,
            layer.capacity,
            floor_ratio=self.floor_ratio,
            normalize=self.normalize,
            candidates=layer.candidates,
        )
