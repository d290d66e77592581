"""Uniform pruning: evenly spaced tokens of every frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TokenPruner
from .scoring import uniform_indices


@dataclass
class UniformPruner(TokenPruner):
    """Keep `tokens_per_frame` evenly spaced tokens of every frame (raster order, centred strides): the
    content-blind spatial baseline.

    Parameters
    ----------
    tokens_per_frame : int
        Tokens kept per frame.
    """

    tokens_per_frame: int = 64

    def _select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        frames, tokens, _ = features.shape
        return uniform_indices(tokens, k, device=features.device).expand(frames, k)
