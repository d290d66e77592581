"""MixKV: mix importance with diversity when ranking KV entries, head by head, on any attention-scored host."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..profiles import HeadProfile
from .base import BudgetConfig, DecodingConfig, KVPress, LayerInputs
from .h2o import H2O
from .scoring import mixkv_scores, redundancy_weight
from .snapkv import SnapKV


@dataclass
class MixKV(KVPress):
    """MixKV (Liu et al., 2025, https://arxiv.org/abs/2510.20707) on top of a host press.

    The host keeps its budgets and its allocation (uniform for SnapKV, per layer for PyramidKV, per head for AdaKV
    and SparseMM, always computed from the host's attention scores); MixKV only changes which tokens fill each head's
    capacity. Per KV head::

        importance = a + vnorm            a = host attention score, vnorm = min-max value norm scaled to mean(a)
        diversity  = min-max(-cos(k_i, mean unit key)) scaled to mean(a)
        score      = w_h * diversity + (1 - w_h) * importance

    `w_h` is the head's key redundancy: by default the mean pairwise cosine similarity of its keys, computed online
    per prompt in closed form (`weight="online"`, as in the GUI-grounding MixKV code); a `HeadProfile` gives fixed
    per-(layer, head) weights measured offline (the main MixKV code's table); a float fixes it for every head.

    Reference behaviour kept on purpose (spec ambiguities, resolved as the official code does):

    - importance is `a + vnorm`, whose mean is about `2 * mean(a)`, so the effective diversity:importance ratio is
      `w : 2(1 - w)`, not `w : (1 - w)`;
    - the mean key uses all prompt tokens, window included; statistics (min-max, means) use the candidate tokens;
    - keys are post-RoPE, scores use KV-head tensors (before GQA repetition).

    Parameters
    ----------
    host : KVPress
        SnapKV, PyramidKV, AdaKV, SparseMM or H2O (a host whose score is non-negative attention mass).
    weight : "online" | float | HeadProfile
        Per-head redundancy weight `w_h` in [0, 1].
    use_value_norm : bool
        Add the value-norm (intrinsic) importance. Default True.
    """

    host: KVPress
    weight: str | float | HeadProfile = "online"
    use_value_norm: bool = True
    last_weights: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.host, (SnapKV, H2O)):
            raise ValueError(
                f"MixKV mixes diversity into attention importance and needs an attention-scored host (SnapKV, "
                f"PyramidKV, AdaKV, SparseMM, H2O); got {type(self.host).__name__}"
            )
        if isinstance(self.weight, str) and self.weight != "online":
            raise ValueError(f"weight must be 'online', a float in [0, 1] or a HeadProfile, got {self.weight!r}")
        if isinstance(self.weight, (int, float)) and not 0.0 <= float(self.weight) <= 1.0:
            raise ValueError(f"a fixed weight must lie in [0, 1], got {self.weight}")

    @property
    def budget_config(self) -> BudgetConfig:
        return self.host.budget_config

    @property
    def decoding(self) -> DecodingConfig | None:
        return self.host.decoding

    @property
    def name(self) -> str:
        return f"MixKV({self.host.name})"

    def score(self, layer: LayerInputs) -> torch.Tensor:
        return self.host.score(layer)

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        return self.host.capacities(layer, scores)

    def head_weights(self, layer: LayerInputs) -> torch.Tensor | float:
        """`w_h` for this layer: `(batch, kv_heads)` online, `(kv_heads,)` from a profile, or a float."""
        if isinstance(self.weight, HeadProfile):
            self.weight.check(layer.num_layers, layer.keys.shape[1])
            return self.weight.scores[layer.layer_idx].to(layer.keys.device).clamp(0.0, 1.0)
        if self.weight == "online":
            return redundancy_weight(layer.keys, key_mask=layer.padding_mask)
        return float(self.weight)

    def rank(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        weight = self.head_weights(layer)
        self.last_weights[layer.layer_idx] = torch.as_tensor(weight).detach().cpu()
        return mixkv_scores(
            scores.float(),
            layer.keys.float(),
            layer.values.float(),
            weight,
            candidates=layer.candidates,
            use_value_norm=self.use_value_norm,
            key_mask=layer.padding_mask,
        )
