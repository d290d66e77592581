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

    `exact_total` (default True) rounds the pyramid so that the model keeps exactly the nominal total,
    `num_layers * kv_heads * budget` entries per row (largest-remainder rounding, `budgets.pyramid_capacities`);
    `False` reproduces the official PyramidKV/MixKV code, whose floored step keeps more (SmolLM2-135M at budget 128:
    11,970 entries instead of 11,520). A layer never keeps more than its evictable tokens, so when `budget - window`
    exceeds them every layer keeps all of them and the total is below nominal (the report's kept counts show it).

    At decoding time (`decode_budget`) the layers hold different numbers of entries, so the pyramid is laid over
    `decode_budget` alone (no clamp to a prompt length): layer `l` keeps its share of `num_layers * decode_budget`.
    """

    beta: int = 20
    exact_total: bool = True

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        bsz, heads = scores.shape[:2]
        n_valid = layer.candidate_count().amax(-1).tolist()  # (batch,) candidates of each row
        if layer.phase == "decode":  # the unclamped pyramid of the budget; keep_indices clamps to what a layer holds
            n_valid = [2 * int(base) + 1 for base in layer.capacity.tolist()]
        per_row = [
            pyramid_capacities(int(base), layer.num_layers, int(n), beta=self.beta, exact_total=self.exact_total)[
                layer.layer_idx
            ]
            for base, n in zip(layer.capacity.tolist(), n_valid)
        ]
        return torch.tensor(per_row, dtype=torch.long, device=scores.device).view(bsz, 1).expand(bsz, heads).clone()
