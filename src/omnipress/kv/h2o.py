"""H2O at prefill: keep the heavy hitters, the entries that received the most attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerInputs, ScorerPress
from .scoring import h2o_scores


@dataclass
class H2O(ScorerPress):
    """H2O (Zhang et al., 2023, https://arxiv.org/abs/2306.14048), applied once at prefill.

        Every prompt entry is scored by the causal attention it receives from all prompt queries (accumulated, GQA
        groups averaged); the `window` most recent entries are always kept, as H2O keeps a recent window besides the
        heavy hitters. With `decode_budget` the scores at decoding time come from the last `window` queries only
    (the full accumulated attention of a generation is not kept).
    """

    window: int = 32
    chunk: int = 1024

    def score(self, layer: LayerInputs) -> torch.Tensor:
        if getattr(layer, "cross", False):  # Whisper's cross-attention: no causality, every query sees every key
            from .cross import cross_attention_scores

            # the mean over the decoder prompt's queries: the accumulated attention divided by their count
            return cross_attention_scores(layer.query, layer.keys, scaling=layer.scaling, key_mask=layer.padding_mask)
        return h2o_scores(layer.query, layer.keys, scaling=layer.scaling, chunk=self.chunk, key_mask=layer.padding_mask)
