"""SparseMM-style: per-(layer, head) budgets from an offline visual-head profile."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..profiles import HeadProfile
from .base import LayerInputs
from .budgets import sparsemm_capacities
from .snapkv import SnapKV


@dataclass
class SparseMM(SnapKV):
    """SparseMM (Wang et al., 2025, https://arxiv.org/abs/2506.05344)-style head budgets on SnapKV scores.

    `profile` holds one non-negative score per (layer, KV head), for example how much each head attends to image
    tokens on calibration prompts (`omnipress.profiles`). The model's total budget is shared in proportion to the
    scores, every head keeping at least `min_ratio` of the uniform share (`RATIO = 0.1` in the MixKV code).

    `exact_total` (default True) rounds the shares so that the model keeps exactly `num_layers * kv_heads * budget`
    entries per row (largest-remainder rounding over the whole model; a head capped at its evictable tokens passes
    the rest to the other heads, `budgets.sparsemm_capacities`); `False` reproduces the official SparseMM/MixKV
    rounding (`round` per head, then the cap), which can miss the total. When `budget - window` exceeds the
    evictable tokens every head keeps all of them and the total is below nominal (the report's kept counts show it).
    """

    profile: HeadProfile | None = field(default=None, repr=False)
    min_ratio: float = 0.1
    exact_total: bool = True
    _tables: dict[tuple, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.profile, HeadProfile):
            raise ValueError(
                "SparseMM needs `profile=HeadProfile(...)` (per-layer, per-KV-head scores); "
                "load one with HeadProfile.load(path)"
            )

    def table(self, base: int, n_valid: int) -> torch.Tensor:
        """`(num_layers, kv_heads)` capacities of a row with base capacity `base` and `n_valid` evictable tokens."""
        assert self.profile is not None  # validated in __post_init__
        scores = self.profile.scores
        key = (tuple(scores.shape), tuple(scores.reshape(-1).tolist()), base, n_valid, self.min_ratio, self.exact_total)
        if key not in self._tables:
            if len(self._tables) > 64:
                self._tables.clear()
            self._tables[key] = sparsemm_capacities(
                scores, base, min_ratio=self.min_ratio, n_valid=n_valid, exact_total=self.exact_total
            )
        return self._tables[key]

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        assert self.profile is not None  # validated in __post_init__
        self.profile.check(layer.num_layers, scores.shape[1])
        rows = [
            self.table(int(base), int(n_valid))[layer.layer_idx]
            for base, n_valid in zip(layer.capacity.tolist(), layer.candidate_count().amax(-1).tolist())
        ]
        return torch.stack(rows).to(scores.device)
