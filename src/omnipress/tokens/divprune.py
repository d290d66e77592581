"""DivPrune-style pruning: the most diverse subset of every frame's tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TokenPruner
from .scoring import max_min_diversity


@dataclass
class DivPrunePruner(TokenPruner):
    """DivPrune-style diversity selection (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large
    Multimodal Models", CVPR 2025, https://arxiv.org/abs/2503.02175), re-implemented from the paper.

    Token pruning as a Max-Min Diversity Problem over cosine distance, solved greedily per frame
    (`max_min_diversity`): the first token is the one farthest from its nearest neighbour, each next one the token
    farthest from the tokens already chosen. Query-agnostic and stateless; kept indices ascending.

    Parameters
    ----------
    tokens_per_frame : int
        Tokens kept per frame.
    """

    tokens_per_frame: int = 64

    def _select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        return max_min_diversity(features, k).sort(dim=-1).values
