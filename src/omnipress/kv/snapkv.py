"""SnapKV: keep the prompt entries the observation window attends to most."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs, ScorerPress
from .scoring import pool1d, snapkv_scores


@dataclass
class SnapKV(ScorerPress):
    """SnapKV (Li et al., 2024, https://arxiv.org/abs/2404.14469).

    The last `window` prompt queries (the observation window) vote for prompt entries: their attention, averaged
    over the window and over each GQA group, smoothed by a 1-D `pooling` of size `kernel`, ranks the entries before
    the window; the window itself is always kept. Uniform budget: every layer and head keeps `budget` entries.

    Parameters
    ----------
    budget, compression_ratio, scope, strict
        See `omnipress.kv.base`.
    window : int
        Observation window (kept, and the queries that score). Default 32, as in the MixKV/SnapKV code.
    kernel : int
        Pooling kernel (odd). Default 5 (MixKV's `init_*` settings; SnapKV's class default is 7).
    pooling : str
        `"avg"` (default) or `"max"`.
    """

    window: int = 32
    kernel: int = 5
    pooling: str = "avg"

    def score(self, layer: LayerInputs) -> torch.Tensor:
        if getattr(layer, "cross", False):  # Whisper's cross-attention: every decoder prompt query sees every key
            from .cross import cross_attention_scores

            scores = cross_attention_scores(layer.query, layer.keys, scaling=layer.scaling, key_mask=layer.padding_mask)
            return pool1d(scores, self.kernel, self.pooling)  # (batch, kv_heads, N)
        if layer.window == 0:
            raise ValueError(f"{self.name} needs an observation window >= 1")
        scores = snapkv_scores(
            layer.window_queries,
            layer.keys,
            scaling=layer.scaling,
            kernel=self.kernel,
            pooling=self.pooling,
            key_mask=layer.padding_mask,
        )  # (batch, kv_heads, N - window)
        return torch.nn.functional.pad(scores, (0, layer.window))  # window entries are protected anyway
