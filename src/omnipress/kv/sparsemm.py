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
    """

    profile: HeadProfile | None = field(default=None, repr=False)
    min_ratio: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.profile, HeadProfile):
            raise ValueError(
                "SparseMM needs `profile=HeadProfile(...)` (per-layer, per-KV-head scores); "
                "load one with HeadProfile.load(path)"
            )

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        assert self.profile is not None  # validated in __post_init__
        self.profile.check(layer.num_layers, scores.shape[1])
        table = sparsemm_capacities(
            self.profile.scores, layer.capacity, min_ratio=self.min_ratio, n_valid=int(layer.candidates.sum())
        )  # (num_layers, kv_heads)
        return table[layer.layer_idx].to(scores.device).expand(scores.shape[0], -1).clone()
