"""Prefill-time KV-cache compression: the press base classes.

A press scores the prompt's KV entries of every layer once, at prefill, and keeps per KV head the window, the tokens
its `scope` protects and the best-ranked of the rest, up to a per-head capacity. Subclasses implement `score` (and
optionally `capacities` for head-/layer-wise budgets and `rank` for a ranking other than the score, which MixKV
uses). Applying a press is a reversible context manager::

    press = SnapKV(budget=128)
    with press(model):
        out = model.generate(**inputs, max_new_tokens=32)
    print(press.report)

Budget conventions (DESIGN.md): `budget` is the number of KV entries kept per head per layer, observation window
included (the papers' convention); `compression_ratio` is the fraction removed (kvpress's convention). Exactly one
is given. `scope` picks what may be evicted (`"all"`, `"vision"`, `"image"`, `"video"`, `"audio"`); everything
outside the scope is kept *on top of* the budget, so with a media scope `budget` = window + kept media tokens and
`compression_ratio` = fraction of the in-scope tokens removed. When the budget already covers every evictable token
the cache is left untouched (the report says so), or a `ValueError` is raised with `strict=True`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..spans import SCOPES
from .budgets import RaggedIndices, top_capacity_indices, top_uniform_indices
from .report import CompressionReport

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BudgetConfig:
    """How much a press keeps; validated once, shared by hosts and wrappers."""

    budget: int | None
    compression_ratio: float | None
    scope: str
    window: int
    strict: bool

    def __post_init__(self) -> None:
        if (self.budget is None) == (self.compression_ratio is None):
            raise ValueError(
                "give exactly one of `budget` (entries kept per KV head) and `compression_ratio` "
                f"(fraction removed); got budget={self.budget}, compression_ratio={self.compression_ratio}"
            )
        if self.window < 0:
            raise ValueError(f"window must be >= 0, got {self.window}")
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
                raise ValueError(f"budget must be a positive integer, got {self.budget!r}")
            if self.budget < self.window:
                raise ValueError(
                    f"budget ({self.budget}) is smaller than the observation window ({self.window}); the budget "
                    "includes the window, so use budget >= window or a smaller window"
                )
        if self.compression_ratio is not None and not 0.0 <= self.compression_ratio < 1.0:
            raise ValueError(
                f"compression_ratio is the fraction removed and must lie in [0, 1), got {self.compression_ratio}"
            )
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; expected one of {SCOPES}")

    def capacity(self, n_scope: int, n_window_in_scope: int, n_candidates: int) -> int:
        """Base number of evictable tokens each head keeps (before head-/layer-wise reallocation)."""
        if self.budget is not None:
            c = self.budget - self.window
        else:
            assert self.compression_ratio is not None  # validated in __post_init__
            c = int(n_scope * (1.0 - self.compression_ratio)) - n_window_in_scope
        return max(0, min(c, n_candidates))


@dataclass
class LayerInputs:
    """What a press sees for one decoder layer at prefill (all tensors post-RoPE).

    `query` `(batch, q_heads, N, dim)` holds every prompt query; `keys`/`values` `(batch, kv_heads, N, dim)`.
    `candidates` `(N,)` marks the evictable tokens, `protected` `(N,)` the tokens always kept (window and out-of-scope
    tokens); `capacity` is the base number of candidates kept per head.
    """

    layer_idx: int
    num_layers: int
    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    scaling: float
    window: int
    candidates: torch.Tensor
    protected: torch.Tensor
    capacity: int

    @property
    def window_queries(self) -> torch.Tensor:
        """The last `window` queries `(batch, q_heads, window, dim)`."""
        return self.query[:, :, self.query.shape[2] - self.window :]

    @property
    def seq_len(self) -> int:
        return self.keys.shape[2]


class KVPress(ABC):
    """Base of every KV press: scoring interface, token selection and the `with press(model):` context."""

    report: CompressionReport | None = None

    @property
    @abstractmethod
    def budget_config(self) -> BudgetConfig:
        """The press's budget, ratio, scope and window."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def score(self, layer: LayerInputs) -> torch.Tensor:
        """Importance of every prompt entry, `(batch, kv_heads, N)`, higher = keep."""

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        """Candidates kept per head, `(batch, kv_heads)` long. Default: the same `layer.capacity` everywhere."""
        bsz, heads = scores.shape[:2]
        return torch.full((bsz, heads), layer.capacity, dtype=torch.long, device=scores.device)

    def rank(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        """Ranking used to pick tokens inside each head's capacity. Default: the scores themselves."""
        return scores

    def keep_indices(self, layer: LayerInputs) -> torch.Tensor | RaggedIndices:
        """Positions kept per head, ascending: a `(batch, kv_heads, k)` tensor when every head keeps `k` entries,
        else `RaggedIndices` (flat positions plus per-head lengths)."""
        scores = self.score(layer)
        n_cand = int(layer.candidates.sum())
        caps = self.capacities(layer, scores).clamp(0, n_cand)
        ranks = self.rank(layer, scores).float().masked_fill(~layer.candidates, float("-inf"))
        return select_tokens(ranks, caps, layer.protected)

    def __call__(self, model: nn.Module) -> _PressContext:
        """Context manager that applies this press to `model` (undone on exit)."""
        return _PressContext(self, model)


class _PressContext:
    """`with press(model):` — attaches a `PressSession` on enter and removes it on exit."""

    def __init__(self, press: KVPress, model: nn.Module) -> None:
        self.press, self.model = press, model
        self._session: Any = None

    def __enter__(self) -> KVPress:
        from .session import PressSession

        self._session = PressSession(self.press, self.model).__enter__()
        return self.press

    def __exit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.__exit__(*exc)


def select_tokens(
    ranks: torch.Tensor, capacities: torch.Tensor, protected: torch.Tensor
) -> torch.Tensor | RaggedIndices:
    """Keep, per head, the `capacities[b, h]` best-ranked entries plus every protected position.

    `ranks` `(batch, kv_heads, N)` with `-inf` on non-candidates; ties go to the earlier position. Returns ascending
    positions: a `(batch, kv_heads, k)` tensor when every head keeps `k` entries, else `RaggedIndices`.
    """
    ranks = ranks.masked_fill(protected, float("inf"))
    capacities = capacities + int(protected.sum())
    caps = capacities.reshape(-1)
    if bool((caps == caps[0]).all()):
        return top_uniform_indices(ranks, int(caps[0]))
    return top_capacity_indices(ranks, capacities)


@dataclass
class ScorerPress(KVPress):
    """A press configured by a budget or a ratio; subclasses implement `score`."""

    budget: int | None = None
    compression_ratio: float | None = None
    scope: str = "all"
    window: int = 0
    strict: bool = False

    def __post_init__(self) -> None:
        self._budget = BudgetConfig(self.budget, self.compression_ratio, self.scope, self.window, self.strict)

    @property
    def budget_config(self) -> BudgetConfig:
        return self._budget
